// Sends Segment calls with the real @segment/analytics-node library; driven by
// tests/clients/test_node_client.py.
//
//   HOST=http://127.0.0.1:PORT WRITE_KEY=... node send.mjs '[{"method": "track", "params": {...}}]'
//
// Optional: MAX_RETRIES (default 3), HTTP_TIMEOUT_MS (default 10000).
// Prints one JSON line per library event: {"event": "http_request" | "http_response" |
// "sent" | "error", ...}. Exits 0 when every call was delivered, 1 on any library error, 2 on
// bad usage.
import { Analytics } from '@segment/analytics-node'

const METHODS = new Set(['track', 'page', 'screen', 'identify', 'group', 'alias'])

function print(line) {
  process.stdout.write(JSON.stringify(line) + '\n')
}

function usage(message) {
  process.stderr.write(`send.mjs: ${message}\n`)
  process.exit(2)
}

const host = process.env.HOST
const writeKey = process.env.WRITE_KEY
if (!host || !writeKey) usage('HOST and WRITE_KEY must be set')
let calls
try {
  calls = JSON.parse(process.argv[2] ?? '')
} catch (err) {
  usage(`the first argument must be a JSON list of calls: ${err.message}`)
}
if (!Array.isArray(calls) || !calls.every((c) => METHODS.has(c?.method))) {
  usage(`each call needs a method among ${[...METHODS].join(', ')}`)
}

const analytics = new Analytics({
  writeKey,
  host,
  maxRetries: Number(process.env.MAX_RETRIES ?? 3),
  httpRequestTimeout: Number(process.env.HTTP_TIMEOUT_MS ?? 10000),
  flushAt: 100, // one batch, sent by closeAndFlush below
})

analytics.on('error', (err) => {
  process.exitCode = 1
  print({ event: 'error', code: err.code, reason: String(err.reason) })
})
analytics.on('http_request', ({ url, headers, body }) => {
  print({ event: 'http_request', url, headers, body: JSON.parse(body) })
})
analytics.on('http_response', ({ status, url, headers, body }) => {
  print({ event: 'http_response', url, status, headers, body: JSON.parse(body) })
})

let settled = 0
for (const { method, params } of calls) {
  analytics[method](params, (err, ctx) => {
    settled += 1
    if (err) process.exitCode = 1
    print({
      event: 'sent',
      method,
      messageId: ctx?.event?.messageId ?? null,
      error: err ? String(err) : null,
    })
  })
}

await analytics.closeAndFlush({ timeout: 30000 })
if (settled !== calls.length) {
  print({ event: 'error', code: 'unsettled', reason: `${calls.length - settled} call(s) unfinished` })
  process.exitCode = 1
}
