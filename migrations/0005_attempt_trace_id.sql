-- The platform's own id for each request (Meta fbtrace_id, TikTok request_id): what its support
-- asks for when "accepted" and "delivered" disagree.
ALTER TABLE attempts ADD COLUMN trace_id TEXT;
