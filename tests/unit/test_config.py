"""relay.config: relay.toml -> frozen typed config; every error names the file and the key."""

import ipaddress
import re
from pathlib import Path

import pytest

from relay.config import ConfigError, load_config, parse_duration_s

REPO = Path(__file__).resolve().parents[2]

MINIMAL = """\
[storage]
path = "var/relay.db"
"""

SOURCE = """
[[sources]]
name = "web"
key = "browser-key"
kind = "browser"
"""

WEBHOOK = """
[[destinations]]
name = "hook"
type = "webhook"
url = "https://example.com/hook"
secret = "0123456789abcdef"
"""


def write(tmp_path: Path, text: str, name: str = "relay.toml") -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def error_of(path: Path, environ: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={} if environ is None else environ)
    message = str(info.value)
    assert message.startswith(f"{path}: "), message
    return message


# --- the shipped example -------------------------------------------------------------------


def test_shipped_relay_toml_loads() -> None:
    path = REPO / "relay.toml"
    config = load_config(path, environ={})
    assert config.path == path
    assert (config.server.host, config.server.port) == ("127.0.0.1", 8080)
    assert config.server.trusted_proxies == (
        ipaddress.ip_network("127.0.0.1/32"),
        ipaddress.ip_network("::1/128"),
    )
    assert config.storage.path == REPO / "var" / "relay.db"
    assert config.storage.dry_run_log == REPO / "var" / "dry-run.jsonl"
    assert config.storage.durability == "full"
    assert config.storage.dedup_window_s == 7 * 86400

    web, backend = config.sources
    assert (web.name, web.key, web.kind, web.time, web.max_age_s) == (
        "web", "demo-browser-key", "browser", "corrected", 7 * 86400,
    )  # fmt: skip
    assert web.allowed_origins == ("http://localhost:8080", "http://127.0.0.1:8080")
    assert (backend.name, backend.key, backend.kind, backend.time) == (
        "backend", "demo-server-key", "server", "client",
    )  # fmt: skip

    assert config.destinations, "the example must ship at least one destination"
    assert all(d.dry_run for d in config.destinations), "a newcomer's relay sends nothing"
    (hook,) = [d for d in config.destinations if d.type == "webhook"]
    assert hook.name == "webhook-demo"
    assert hook.batch_size == 100
    assert hook.options == {
        "url": "https://example.com/relay-hook",
        "secret": "demo-webhook-secret",
    }


def test_shipped_relay_toml_takes_secrets_from_the_environment() -> None:
    environ = {"RELAY_WEB_KEY": "wk-123", "RELAY_WEBHOOK_SECRET": "hook-secret-xyz"}
    config = load_config(REPO / "relay.toml", environ=environ)
    assert config.sources[0].key == "wk-123"
    assert config.sources[1].key == "demo-server-key"
    assert config.destinations[0].options["secret"] == "hook-secret-xyz"


# --- defaults ------------------------------------------------------------------------------


def test_minimal_config_defaults(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, MINIMAL), environ={})
    assert (config.server.host, config.server.port) == ("127.0.0.1", 8080)
    assert config.server.trusted_proxies == ()
    assert config.storage.dry_run_log is None
    assert config.sources == ()
    assert config.destinations == ()
    assert (config.logging.level, config.logging.format) == ("info", "auto")


@pytest.mark.parametrize(("kind", "policy"), [("browser", "corrected"), ("server", "client")])
def test_time_policy_defaults_by_kind(tmp_path: Path, kind: str, policy: str) -> None:
    text = MINIMAL + f'[[sources]]\nname = "s"\nkey = "k"\nkind = "{kind}"\n'
    (source,) = load_config(write(tmp_path, text), environ={}).sources
    assert source.time == policy
    assert source.max_age_s == 7 * 86400
    assert source.default_region == "US"
    assert source.allowed_origins == ()


def test_explicit_time_policy_and_max_age(tmp_path: Path) -> None:
    text = MINIMAL + (
        '[[sources]]\nname = "s"\nkey = "k"\nkind = "browser"\ntime = "server"\n'
        'max_age = "48h"\ndefault_region = "de"\n'
    )
    (source,) = load_config(write(tmp_path, text), environ={}).sources
    assert (source.time, source.max_age_s, source.default_region) == ("server", 172800, "DE")


def test_destination_settings_are_typed(tmp_path: Path) -> None:
    text = (
        MINIMAL
        + WEBHOOK
        + (
            'events = ["purchase", "sign_up"]\nevent_names = { purchase = "Order", sign_up = 7 }\n'
            'consent = ["ad_user_data"]\ntimeout = "5s"\nbackoff_max = "1h"\n'
            'circuit_cooldown = "2m"\nrate_limit = 20\nendpoint = "http://127.0.0.1:9000"\n'
        )
    )
    (dest,) = load_config(write(tmp_path, text), environ={}).destinations
    assert dest.events == frozenset({"purchase", "sign_up"})
    assert dest.event_names == {"purchase": "Order", "sign_up": "7"}
    assert dest.consent == ("ad_user_data",)
    assert (dest.timeout_s, dest.backoff_max_s, dest.circuit_cooldown_s) == (5.0, 3600.0, 120.0)
    assert dest.rate_limit == 20.0
    assert dest.endpoint == "http://127.0.0.1:9000"
    assert dest.dry_run is False


def test_config_objects_are_frozen(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, MINIMAL + SOURCE), environ={})
    with pytest.raises(AttributeError):
        config.sources[0].key = "other"  # type: ignore[misc]


# --- paths ---------------------------------------------------------------------------------


def test_relative_storage_paths_are_relative_to_the_config_file(tmp_path: Path) -> None:
    text = '[storage]\npath = "data/relay.db"\ndry_run_log = "../logs/dry.jsonl"\n'
    path = write(tmp_path, text, "etc/relay/relay.toml")
    config = load_config(path, environ={})
    assert config.storage.path == tmp_path / "etc" / "relay" / "data" / "relay.db"
    assert config.storage.dry_run_log == tmp_path / "etc" / "relay" / ".." / "logs" / "dry.jsonl"


def test_relative_config_path_keeps_storage_next_to_the_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path, '[storage]\npath = "relay.db"\n', "conf/relay.toml")
    monkeypatch.chdir(tmp_path)
    config = load_config(Path("conf/relay.toml"), environ={})
    assert config.storage.path.resolve() == tmp_path / "conf" / "relay.db"


def test_absolute_storage_path_is_kept(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere" / "relay.db"
    path = write(tmp_path, f'[storage]\npath = "{target.as_posix()}"\n', "conf/relay.toml")
    assert load_config(path, environ={}).storage.path == target


# --- unknown keys --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("sauces = 1\n" + MINIMAL, "sauces"),
        (MINIMAL + "[server]\nlisten_on = \"127.0.0.1:80\"\n", "server.listen_on"),
        ("[storage]\npath = \"x.db\"\ndurabilty = \"full\"\n", "storage.durabilty"),
        (MINIMAL + SOURCE + "alowed_origins = []\n", "sources[0].alowed_origins"),
        (MINIMAL + SOURCE + SOURCE.replace('"web"', '"w2"').replace("browser-key", "k2")
         + "maxage = \"1d\"\n", "sources[1].maxage"),
        (MINIMAL + WEBHOOK + "batchsize = 10\n", "destinations[0].batchsize"),
        (MINIMAL + WEBHOOK + "pixel_id = \"123\"\n", "destinations[0].pixel_id"),
        (MINIMAL + "[logging]\nlevle = \"info\"\n", "logging.levle"),
    ],
)  # fmt: skip
def test_unknown_keys_are_errors(tmp_path: Path, text: str, key: str) -> None:
    path = write(tmp_path, text)
    assert error_of(path) == f"{path}: {key}: unknown key"


# --- wrong types and values ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("snippet", "key", "message"),
    [
        ('[server]\nmax_body_bytes = "1MB"\n', "server.max_body_bytes", "positive integer"),
        ("[server]\nmax_body_bytes = 0\n", "server.max_body_bytes", "positive integer"),
        ("[server]\nmax_events_per_request = true\n", "server.max_events_per_request",
         "positive integer"),
        ("[server]\nlisten = 8080\n", "server.listen", "non-empty string"),
        ('[server]\ntrusted_proxies = "10.0.0.0/8"\n', "server.trusted_proxies", "list"),
        ('[server]\ntrusted_proxies = ["proxy.local"]\n', "server.trusted_proxies",
         "IP addresses or CIDR"),
        ('[server]\nshutdown_grace = "soon"\n', "server.shutdown_grace", "duration"),
        ('[logging]\nlevel = "verbose"\n', "logging.level", '"debug", "info"'),
        ("[server]\n", None, None),
    ],
)  # fmt: skip
def test_wrong_server_and_logging_values_name_the_key(
    tmp_path: Path, snippet: str, key: str | None, message: str | None
) -> None:
    path = write(tmp_path, MINIMAL + snippet)
    if key is None:
        load_config(path, environ={})  # an empty [server] table is fine
        return
    error = error_of(path)
    assert error.startswith(f"{path}: {key}: "), error
    assert message in error


@pytest.mark.parametrize(
    ("snippet", "key", "message"),
    [
        ('durability = "fast"\n', "storage.durability", '"full", "normal"'),
        ('dedup_window = "a week"\n', "storage.dedup_window", "duration"),
        ("max_backlog = -1\n", "storage.max_backlog", "positive integer"),
        ("dry_run_log = 5\n", "storage.dry_run_log", "non-empty string"),
    ],
)
def test_wrong_storage_values_name_the_key(
    tmp_path: Path, snippet: str, key: str, message: str
) -> None:
    path = write(tmp_path, MINIMAL + snippet)
    error = error_of(path)
    assert error.startswith(f"{path}: {key}: "), error
    assert message in error


@pytest.mark.parametrize(
    ("snippet", "key", "message"),
    [
        ('kind = "browser"\nkind = "mobile"\n', None, None),  # duplicate TOML key: not TOML
        ('time = "device"\n', "sources[0].time", '"server", "corrected", "client"'),
        ('max_age = "forever"\n', "sources[0].max_age", "duration"),
        ('allowed_origins = "https://shop.example"\n', "sources[0].allowed_origins", "list"),
        ('allowed_origins = ["https://a.example", ""]\n', "sources[0].allowed_origins", "list"),
        ('default_region = "USA"\n', "sources[0].default_region", "two-letter"),
    ],
)
def test_wrong_source_values_name_the_key(
    tmp_path: Path, snippet: str, key: str | None, message: str | None
) -> None:
    path = write(tmp_path, MINIMAL + SOURCE + snippet)
    error = error_of(path)
    if key is None:
        assert "not valid TOML" in error
        return
    assert error.startswith(f"{path}: {key}: "), error
    assert message in error


def test_source_kind_must_be_browser_or_server(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + SOURCE.replace('"browser"', '"mobile"'))
    assert error_of(path) == f'{path}: sources[0].kind: must be one of "browser", "server"'


@pytest.mark.parametrize("missing", ["name", "key", "kind"])
def test_source_required_keys(tmp_path: Path, missing: str) -> None:
    lines = [ln for ln in SOURCE.splitlines() if not ln.startswith(f"{missing} =")]
    path = write(tmp_path, MINIMAL + "\n".join(lines) + "\n")
    assert error_of(path) == f"{path}: sources[0].{missing}: is required"


@pytest.mark.parametrize(
    ("snippet", "key", "message"),
    [
        ('dry_run = "yes"\n', "destinations[0].dry_run", "true or false"),
        ("batch_size = 0\n", "destinations[0].batch_size", "positive integer"),
        ('batch_size = "100"\n', "destinations[0].batch_size", "positive integer"),
        ("rate_limit = -1\n", "destinations[0].rate_limit", ">= 0"),
        ('events = "purchase"\n', "destinations[0].events", "list"),
        ("event_names = { purchase = true }\n", "destinations[0].event_names", "table"),
        ('consent = ["marketing"]\n', "destinations[0].consent", "ad_storage"),
        ('url = "ftp://example.com/hook"\n', "destinations[0].url", "http"),
        ('secret = "short"\n', "destinations[0].secret", "at least 8"),
    ],
)
def test_wrong_destination_values_name_the_key(
    tmp_path: Path, snippet: str, key: str, message: str
) -> None:
    base = WEBHOOK
    for option in ("url", "secret"):
        if snippet.startswith(f"{option} ="):
            base = "\n".join(ln for ln in WEBHOOK.splitlines() if not ln.startswith(option))
            base += "\n"
    path = write(tmp_path, MINIMAL + base + snippet)
    error = error_of(path)
    assert error.startswith(f"{path}: {key}: "), error
    assert message in error


def test_secret_value_is_not_echoed_in_a_validation_error(tmp_path: Path) -> None:
    text = MINIMAL + WEBHOOK.replace('"0123456789abcdef"', '"${HOOK_SECRET}"')
    error = error_of(write(tmp_path, text), environ={"HOOK_SECRET": "pw12345"})
    assert "destinations[0].secret" in error
    assert "pw12345" not in error


def test_storage_path_is_required(tmp_path: Path) -> None:
    path = write(tmp_path, SOURCE)
    assert error_of(path) == f"{path}: storage.path: is required"


def test_sources_must_be_an_array_of_tables(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + '[sources]\nname = "web"\n')
    assert error_of(path) == f"{path}: sources: must be an array of tables ([[sources]])"


def test_invalid_toml_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "[storage\npath = 1\n")
    assert "not valid TOML" in error_of(path)


def test_missing_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.toml"
    assert "cannot read" in error_of(path)


# --- ${ENV} expansion ----------------------------------------------------------------------


def test_env_reference_is_expanded(tmp_path: Path) -> None:
    text = MINIMAL + SOURCE.replace('"browser-key"', '"${WEB_KEY}"')
    config = load_config(write(tmp_path, text), environ={"WEB_KEY": "from-env-123"})
    assert config.sources[0].key == "from-env-123"


def test_env_reference_inside_a_string_and_a_list(tmp_path: Path) -> None:
    text = (
        MINIMAL
        + SOURCE.replace('"browser-key"', '"pre-${A}-${B}"')
        + ('allowed_origins = ["https://${SHOP_HOST}"]\n')
    )
    environ = {"A": "one", "B": "two", "SHOP_HOST": "shop.example"}
    (source,) = load_config(write(tmp_path, text), environ=environ).sources
    assert source.key == "pre-one-two"
    assert source.allowed_origins == ("https://shop.example",)


@pytest.mark.parametrize(
    ("environ", "expected"),
    [({}, "fallback-key"), ({"WEB_KEY": "real-key"}, "real-key")],
)
def test_env_reference_with_default(tmp_path: Path, environ: dict[str, str], expected: str) -> None:
    text = MINIMAL + SOURCE.replace('"browser-key"', '"${WEB_KEY:-fallback-key}"')
    assert load_config(write(tmp_path, text), environ=environ).sources[0].key == expected


def test_env_default_may_be_empty_for_optional_text(tmp_path: Path) -> None:
    text = MINIMAL + WEBHOOK + 'test_event_code = "TEST${CODE:-}1"\n'
    (dest,) = load_config(write(tmp_path, text), environ={}).destinations
    assert dest.test_event_code == "TEST1"


def test_missing_env_var_names_key_and_variable_but_no_secret(tmp_path: Path) -> None:
    text = MINIMAL + WEBHOOK.replace('"0123456789abcdef"', '"${PRESENT_SECRET}${ABSENT_VAR}"')
    environ = {"PRESENT_SECRET": "hunter2-very-secret", "OTHER_TOKEN": "tok-999"}
    path = write(tmp_path, text)
    error = error_of(path, environ)
    assert error == f"{path}: destinations[0].secret: environment variable ABSENT_VAR is not set"
    assert "hunter2" not in error
    assert "tok-999" not in error


def test_missing_env_var_in_a_list_names_the_index(tmp_path: Path) -> None:
    text = MINIMAL + SOURCE + 'allowed_origins = ["https://a.example", "${ORIGIN}"]\n'
    path = write(tmp_path, text)
    assert error_of(path) == (
        f"{path}: sources[0].allowed_origins[1]: environment variable ORIGIN is not set"
    )


def test_environment_defaults_to_os_environ(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RELAY_TEST_WEB_KEY", "os-env-key")
    text = MINIMAL + SOURCE.replace('"browser-key"', '"${RELAY_TEST_WEB_KEY}"')
    assert load_config(write(tmp_path, text)).sources[0].key == "os-env-key"


# --- uniqueness ----------------------------------------------------------------------------


def test_duplicate_source_key_is_rejected(tmp_path: Path) -> None:
    second = SOURCE.replace('"web"', '"web2"')
    path = write(tmp_path, MINIMAL + SOURCE + second)
    assert error_of(path) == f"{path}: sources[1].key: is used twice; it must be unique"


def test_duplicate_source_key_via_env_is_rejected(tmp_path: Path) -> None:
    first = SOURCE.replace('"browser-key"', '"${K}"')
    second = first.replace('"web"', '"web2"')
    path = write(tmp_path, MINIMAL + first + second)
    error = error_of(path, {"K": "same-key-value"})
    assert error == f"{path}: sources[1].key: is used twice; it must be unique"
    assert "same-key-value" not in error


def test_duplicate_source_name_is_rejected(tmp_path: Path) -> None:
    second = SOURCE.replace('"browser-key"', '"other-key"')
    path = write(tmp_path, MINIMAL + SOURCE + second)
    assert error_of(path) == f"{path}: sources[1].name: is used twice; it must be unique"


def test_duplicate_destination_name_is_rejected(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + WEBHOOK + WEBHOOK)
    assert error_of(path) == f"{path}: destinations[1].name: is used twice; it must be unique"


# --- destination types ---------------------------------------------------------------------


@pytest.mark.parametrize("type_line", ['type = "fax"', "type = 5", ""])
def test_unknown_destination_type_lists_valid_types(tmp_path: Path, type_line: str) -> None:
    text = MINIMAL + WEBHOOK.replace('type = "webhook"', type_line)
    path = write(tmp_path, text)
    error = error_of(path)
    assert re.fullmatch(
        rf"{re.escape(str(path))}: destinations\[0\]\.type: must be one of .*", error
    )
    assert '"webhook"' in error


@pytest.mark.parametrize("option", ["url", "secret"])
def test_webhook_requires_url_and_secret(tmp_path: Path, option: str) -> None:
    lines = [ln for ln in WEBHOOK.splitlines() if not ln.startswith(f"{option} =")]
    path = write(tmp_path, MINIMAL + "\n".join(lines) + "\n")
    assert error_of(path) == f'{path}: destinations[0].{option}: is required for type "webhook"'


def test_destination_name_is_required(tmp_path: Path) -> None:
    lines = [ln for ln in WEBHOOK.splitlines() if not ln.startswith("name =")]
    path = write(tmp_path, MINIMAL + "\n".join(lines) + "\n")
    assert error_of(path) == f"{path}: destinations[0].name: is required"


def test_webhook_options_are_kept_apart_from_common_settings(tmp_path: Path) -> None:
    (dest,) = load_config(write(tmp_path, MINIMAL + WEBHOOK), environ={}).destinations
    assert (dest.name, dest.type) == ("hook", "webhook")
    assert dest.options == {"url": "https://example.com/hook", "secret": "0123456789abcdef"}


# --- listen --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("listen", "host", "port"),
    [
        ("127.0.0.1:8080", "127.0.0.1", 8080),
        ("0.0.0.0:9000", "0.0.0.0", 9000),
        (":8081", "0.0.0.0", 8081),
        ("localhost:80", "localhost", 80),
        ("[::1]:8443", "::1", 8443),
        ("[::]:8080", "::", 8080),
    ],
)
def test_listen(tmp_path: Path, listen: str, host: str, port: int) -> None:
    path = write(tmp_path, MINIMAL + f'[server]\nlisten = "{listen}"\n')
    server = load_config(path, environ={}).server
    assert (server.host, server.port) == (host, port)


@pytest.mark.parametrize("listen", ["localhost", "127.0.0.1:", "127.0.0.1:http", "host:65536", ""])
def test_bad_listen_names_the_key(tmp_path: Path, listen: str) -> None:
    path = write(tmp_path, MINIMAL + f'[server]\nlisten = "{listen}"\n')
    assert error_of(path).startswith(f"{path}: server.listen: ")


# --- durations -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("30s", 30.0),
        ("5m", 300.0),
        ("48h", 172_800.0),
        ("7d", 604_800.0),
        ("250ms", 0.25),
        ("1.5h", 5400.0),
        (" 10 m ", 600.0),
        ("45", 45.0),
        (30, 30.0),
        (0, 0.0),
        (2.5, 2.5),
    ],
)
def test_parse_duration_s(value: object, seconds: float) -> None:
    assert parse_duration_s(value) == seconds


@pytest.mark.parametrize("value", ["", "1w", "5 weeks", "-5s", "s", "5sec", True, None, [30]])
def test_parse_duration_s_rejects(value: object) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration_s(value)


def test_parse_duration_s_rejects_negative_numbers() -> None:
    with pytest.raises(ValueError, match="must not be negative"):
        parse_duration_s(-1)


def test_durations_in_config_become_seconds(tmp_path: Path) -> None:
    text = (
        '[server]\nshutdown_grace = "30s"\n'
        '[storage]\npath = "r.db"\ndedup_window = "48h"\n'
        + SOURCE + 'max_age = "90d"\n'
        + WEBHOOK + 'lease = "5m"\nbackoff_base = 1\n'
    )  # fmt: skip
    config = load_config(write(tmp_path, text), environ={})
    assert config.server.shutdown_grace_s == 30.0
    assert config.storage.dedup_window_s == 172_800
    assert config.sources[0].max_age_s == 90 * 86400
    assert (config.destinations[0].lease_s, config.destinations[0].backoff_base_s) == (300.0, 1.0)


def test_env_default_also_applies_when_the_variable_is_empty(tmp_path: Path) -> None:
    text = MINIMAL + SOURCE.replace('key = "browser-key"', 'key = "${WEB_KEY:-fallback-key}"')
    config = load_config(write(tmp_path, text), environ={"WEB_KEY": ""})
    assert config.sources[0].key == "fallback-key"


def test_relative_paths_do_not_depend_on_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path / "conf", MINIMAL)
    monkeypatch.chdir(tmp_path)
    config = load_config(Path("conf/relay.toml"), environ={})
    assert config.storage.path == (tmp_path / "conf" / "var" / "relay.db").resolve()


def test_every_commented_platform_example_in_relay_toml_loads(tmp_path: Path) -> None:
    """Uncommenting any example of the shipped relay.toml gives a valid destination."""
    text = (REPO / "relay.toml").read_text()
    head, marker, examples = text.partition("# [[destinations]]")
    assert marker
    examples = marker + examples
    lines = []
    for line in examples.splitlines():
        if line.startswith("# # ") or line == "#":
            continue  # commentary inside an example
        lines.append(line[2:] if line.startswith("# [") or line.startswith("# ") else line)
    path = write(tmp_path, head + "\n".join(lines))
    env = {v: "token-from-env" for v in re.findall(r"\$\{([A-Z0-9_]+)\}", path.read_text())}
    config = load_config(path, environ=env)
    types = {d.type for d in config.destinations}
    assert types >= {"meta", "tiktok", "linkedin", "ga4", "pinterest", "snapchat", "reddit"}
    assert all(d.dry_run for d in config.destinations)


def test_admin_key_must_not_be_a_source_key(tmp_path: Path) -> None:
    text = '[server]\nadmin_key = "browser-key"\n' + MINIMAL + SOURCE
    message = error_of(write(tmp_path, text))
    assert message.endswith("server.admin_key: must differ from every source key")
    text = '[server]\nadmin_key = "admin-0123456789"\n' + MINIMAL + SOURCE
    assert load_config(write(tmp_path, text), environ={}).server.admin_key == "admin-0123456789"


def test_storage_sizes_and_retentions(tmp_path: Path) -> None:
    text = MINIMAL + 'min_free_disk = "1GiB"\ndead_retention = "14d"\nlog_retention = "48h"\n'
    storage = load_config(write(tmp_path, text), environ={}).storage
    assert storage.min_free_disk_bytes == 1024**3
    assert (storage.dead_retention_s, storage.log_retention_s) == (14 * 86400, 48 * 3600)
    bad = MINIMAL + 'min_free_disk = "lots"\n'
    assert error_of(write(tmp_path, bad)).endswith(
        'storage.min_free_disk: must be a size such as 268435456, "256MiB" or "1GB"'
    )
