"""cardsync.toml: discovery, validation (every problem, with its key path) and resolution."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import cardsync.backends
from cardsync.config import (
    CLOUDS,
    BackendConfig,
    Config,
    ScheduleConfig,
    StateConfig,
    builtin_templates,
    load,
    resolve_path,
)
from cardsync.errors import ConfigError

TENANT = "11111111-2222-3333-4444-555555555555"
CLIENT = "66666666-7777-8888-9999-000000000000"
SECRET = "Zq8~hunter2-very-secret-value"

BACKEND = """
[backend]
output = "site"
base_url = "https://cards.example.org/"
"""


def org(slug: str = "contoso", entra: str = "", extra: str = "") -> str:
    """One [[organizations]] table with a valid app registration, plus extra lines."""
    return f"""
[[organizations]]
slug = "{slug}"
{extra}
[organizations.entra]
tenant_id = "{TENANT}"
client_id = "{CLIENT}"
{entra or 'client_secret = "${CONTOSO_SECRET}"'}
"""


ENV = {"CONTOSO_SECRET": SECRET}


def write(folder: Path, text: str, name: str = "cardsync.toml") -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def problems(path: Path, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load(path, env=ENV if env is None else env)
    return caught.value.problems


# --- a valid file and its defaults ---------------------------------------------------


def test_minimal_file_gets_documented_defaults(tmp_path: Path) -> None:
    path = write(tmp_path, BACKEND + org())
    config = load(path, env=ENV)

    assert config.path == path
    assert config.state.path == tmp_path / "cardsync.db"
    assert config.schedule == ScheduleConfig(interval_minutes=40)
    assert config.backend == BackendConfig(
        "local",
        {"output": tmp_path / "site", "base_url": "https://cards.example.org", "index": True},
    )
    (contoso,) = config.organizations
    assert (contoso.slug, contoso.name, contoso.template) == ("contoso", "contoso", "classic")
    entra = contoso.entra
    assert (entra.tenant_id, entra.client_id, entra.client_secret) == (TENANT, CLIENT, SECRET)
    assert entra.certificate_path is None
    assert entra.cloud == "global"
    assert entra.authority == "https://login.microsoftonline.com"
    assert entra.graph_url == "https://graph.microsoft.com/v1.0"
    assert entra.custom_authority is False
    assert config.org("contoso") is contoso
    assert config.secrets() == (SECRET,)


def test_every_key_is_read(tmp_path: Path) -> None:
    (tmp_path / "certs").mkdir()
    (tmp_path / "certs" / "app.pem").write_text("not checked here")
    path = write(
        tmp_path,
        """
        [state]
        path = "var/state.sqlite"
        [backend]
        type = "local"
        output = "/srv/cards"
        base_url = "http://intranet.example.org/people/cards"
        index = false
        [schedule]
        interval_minutes = 1440
        """
        + org(
            "fabrikam-2",
            entra='certificate_path = "certs/app.pem"\ncertificate_password = "${PEM_PASS}"\n'
            'cloud = "usgov"',
            extra='name = "Fabrikam, Inc."\ntemplate = "minimal"',
        ),
    )
    config = load(path, env={"PEM_PASS": "pem-pass-123"})

    assert config.state == StateConfig(tmp_path / "var" / "state.sqlite")
    assert config.backend.options == {
        "output": Path("/srv/cards"),
        "base_url": "http://intranet.example.org/people/cards",
        "index": False,
    }
    assert config.schedule.interval_minutes == 1440
    (fabrikam,) = config.organizations
    assert (fabrikam.slug, fabrikam.name, fabrikam.template) == (
        "fabrikam-2",
        "Fabrikam, Inc.",
        "minimal",
    )
    assert fabrikam.entra.certificate_path == tmp_path / "certs" / "app.pem"
    assert fabrikam.entra.client_secret is None
    assert config.secrets() == ("pem-pass-123",)
    assert "pem-pass-123" not in repr(config)


def test_config_without_schedule_still_constructs() -> None:
    config = Config(None, StateConfig(Path("x.db")), BackendConfig("memory"), ())
    assert config.schedule.interval_minutes == 40


def test_example_file_is_valid() -> None:
    example = Path(__file__).resolve().parents[1] / "config.example.toml"
    names = set(re.findall(r'"\$\{(\w+)\}"', example.read_text(encoding="utf-8")))
    assert names, "the example shows how secrets come from the environment"

    config = load(example, env={name: f"value-of-{name}" for name in names})

    assert config.organizations
    assert config.backend.type == "local"
    assert config.state.path.parent == example.parent


# --- clouds and authority overrides ------------------------------------------------


@pytest.mark.parametrize("cloud", sorted(CLOUDS))
def test_cloud_sets_login_and_graph_hosts(tmp_path: Path, cloud: str) -> None:
    entra = f'client_secret = "literal"\ncloud = "{cloud}"'
    config = load(write(tmp_path, BACKEND + org(entra=entra)), env={})

    login, graph = CLOUDS[cloud]
    resolved = config.organizations[0].entra
    assert resolved.authority == f"https://{login}"
    assert resolved.graph_url == f"https://{graph}/v1.0"
    assert resolved.graph_scope == f"https://{graph}/.default"
    assert resolved.custom_authority is False


@pytest.mark.parametrize(
    ("authority_host", "authority", "custom"),
    [
        ("127.0.0.1:8443", "https://127.0.0.1:8443", True),
        ("https://127.0.0.1:8443", "https://127.0.0.1:8443", True),
        ("https://127.0.0.1:8443/", "https://127.0.0.1:8443", True),
        ("login.example.test", "https://login.example.test", True),
        ("[::1]:9000", "https://[::1]:9000", True),
        ("login.microsoftonline.us", "https://login.microsoftonline.us", False),
        ("https://login.chinacloudapi.cn", "https://login.chinacloudapi.cn", False),
    ],
)
def test_authority_host_override(
    tmp_path: Path, authority_host: str, authority: str, custom: bool
) -> None:
    entra = f'client_secret = "x"\nauthority_host = "{authority_host}"'
    config = load(write(tmp_path, BACKEND + org(entra=entra)), env={})

    resolved = config.organizations[0].entra
    assert (resolved.authority, resolved.custom_authority) == (authority, custom)
    assert resolved.graph_url == "https://graph.microsoft.com/v1.0"  # unchanged


def test_graph_url_override_keeps_the_cloud_scope(tmp_path: Path) -> None:
    entra = 'client_secret = "x"\ngraph_url = "https://127.0.0.1:8443/v1.0/"'
    config = load(write(tmp_path, BACKEND + org(entra=entra)), env={})

    resolved = config.organizations[0].entra
    assert resolved.graph_url == "https://127.0.0.1:8443/v1.0"
    assert resolved.graph_scope == "https://graph.microsoft.com/.default"


@pytest.mark.parametrize(
    ("key", "value", "problem"),
    [
        ("authority_host", "http://127.0.0.1:8443", "http:// is refused"),
        ("authority_host", "https://h.example/tenant", "without a path"),
        ("authority_host", "h.example:99999", "port is not a number"),
        ("authority_host", "ftp://h.example", "expected a URL starting with https://"),
        ("graph_url", "http://127.0.0.1/v1.0", "expected a URL starting with https://"),
        ("graph_url", "https://127.0.0.1/v2", "ending with /v1.0 or /beta"),
        ("graph_url", "https://127.0.0.1/v1.0?x=1", "must not have a query"),
    ],
)
def test_bad_overrides_are_refused(tmp_path: Path, key: str, value: str, problem: str) -> None:
    entra = f'client_secret = "x"\n{key} = "{value}"'
    (found,) = problems(write(tmp_path, BACKEND + org(entra=entra)), env={})
    assert found.startswith(f"organizations[0].entra.{key}: ")
    assert problem in found


# --- ${ENV} values ---------------------------------------------------------------------


def test_env_reference_is_replaced_by_the_variable(tmp_path: Path) -> None:
    path = write(tmp_path, BACKEND + org(extra='name = "${ORG_NAME}"'))
    config = load(path, env={**ENV, "ORG_NAME": "Contoso Ltd"})
    assert config.organizations[0].name == "Contoso Ltd"
    assert config.organizations[0].entra.client_secret == SECRET


def test_env_reference_only_replaces_a_whole_value(tmp_path: Path) -> None:
    path = write(tmp_path, BACKEND + org(extra='name = "Contoso ${SUFFIX}"'))
    config = load(path, env={**ENV, "SUFFIX": "Ltd"})
    assert config.organizations[0].name == "Contoso ${SUFFIX}"


def test_unset_and_empty_variables_are_problems(tmp_path: Path) -> None:
    path = write(tmp_path, BACKEND + org() + org("fabrikam", 'client_secret = "${FAB_SECRET}"'))
    assert problems(path, env={"FAB_SECRET": ""}) == [
        "organizations[0].entra.client_secret: environment variable CONTOSO_SECRET is not set",
        "organizations[1].entra.client_secret: environment variable FAB_SECRET is empty",
    ]


def test_env_reads_os_environ_by_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONTOSO_SECRET", "from-os-environ")
    config = load(write(tmp_path, BACKEND + org()))
    assert config.organizations[0].entra.client_secret == "from-os-environ"


def test_env_reference_in_a_non_string_key_is_explained(tmp_path: Path) -> None:
    path = write(tmp_path, BACKEND + '[schedule]\ninterval_minutes = "${EVERY}"\n' + org())
    assert problems(path, env={**ENV, "EVERY": "5"}) == [
        "schedule.interval_minutes: expected an integer, got a string"
        " (${...} works for string values only)"
    ]


# --- secrets never echoed -------------------------------------------------------------


def test_secrets_never_appear_in_errors(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        BACKEND
        # a secret under a misspelt key, and one of the wrong type
        + org(entra=f'client_secert = "{SECRET}"\ncertificate_pasword = "{SECRET}-pw"')
        + org("fabrikam", entra=f'client_secret = ["{SECRET}"]')
        + org("northwind", entra=f"client_secret = {{ value = '{SECRET}' }}")
        # an env value that fails its check is not echoed either
        + org("tailspin", entra='client_secret = "x"\ncloud = "${CLOUD}"'),
    )
    with pytest.raises(ConfigError) as caught:
        load(path, env={"CLOUD": SECRET})
    error = caught.value

    assert error.problems == [
        "organizations[0].entra.client_secert: unknown key, did you mean 'client_secret'?",
        "organizations[0].entra.certificate_pasword: unknown key,"
        " did you mean 'certificate_password'?",
        "organizations[0].entra: set exactly one of client_secret and certificate_path",
        "organizations[1].entra.client_secret: expected a string, got an array",
        "organizations[2].entra.client_secret: expected a string, got a table",
        "organizations[3].entra.cloud: expected one of 'global', 'usgov', 'usgov-dod', 'china'",
    ]
    for text in (str(error), repr(error), error.message, error.hint or "", *error.problems):
        assert "hunter2" not in text


def test_a_secret_pasted_into_the_wrong_key_is_not_echoed(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        f'[backend]\noutput = "o"\nbase_url = "https://me:{SECRET}@cards.example.org"\n'
        + org().replace(CLIENT, SECRET).replace(TENANT, SECRET),
    )
    assert problems(path) == [
        "backend.base_url: expected a URL with a host name (and no user name)",
        "organizations[0].entra.tenant_id: expected a GUID or a domain like"
        " contoso.onmicrosoft.com",
        "organizations[0].entra.client_id: expected a GUID (the Application (client) ID)",
    ]


def test_secrets_are_not_in_repr(tmp_path: Path) -> None:
    config = load(write(tmp_path, BACKEND + org()), env=ENV)
    assert SECRET not in repr(config)
    assert SECRET not in str(config)
    assert SECRET not in repr(config.organizations[0].entra)


# --- collecting problems ---------------------------------------------------------------


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        [backend]
        type = "local"
        outptu = "site"
        base_url = "https://cards.example.org/?x=1"
        [schedule]
        interval_minutes = 0
        """
        + org("Contoso", extra='template = "clasic"', entra='client_secret = "x"\ncloud = "globl"')
        + org("fabrikam", entra='client_secret = "x"\ntenant = "t"')
        + org("fabrikam", entra='client_secret = "x"'),
    )
    found = problems(path)

    assert found == [
        "backend.output: required key is missing",
        "backend.base_url: the URL must not have a query (?...) or fragment (#...),"
        " got 'https://cards.example.org/?x=1'",
        "backend.outptu: unknown key, did you mean 'output'?",
        "schedule.interval_minutes: must be between 1 and 1440, got 0",
        "organizations[0].slug: expected up to 63 lowercase letters, digits and '-',"
        " not starting with '-', got 'Contoso'",
        "organizations[0].template: expected a built-in template"
        f" ({', '.join(builtin_templates())})"
        f" or a folder of templates, and {tmp_path / 'clasic'} is not a folder;"
        " did you mean 'classic'?",
        "organizations[0].entra.cloud: expected one of 'global', 'usgov', 'usgov-dod', 'china',"
        " got 'globl'; did you mean 'global'?",
        "organizations[1].entra.tenant: unknown key, did you mean 'tenant_id'?",
        "organizations[2].slug: duplicate slug 'fabrikam' (also organizations[1])",
    ]


def test_error_message_counts_problems_and_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, '[backend]\ntype = "memory"\n[schedule]\ninterval_minutes = 0\n')
    with pytest.raises(ConfigError) as caught:
        load(path, env={})
    assert caught.value.problems == [
        "schedule.interval_minutes: must be between 1 and 1440, got 0",
        "organizations: at least one organization is required; add an [[organizations]] table",
    ]
    assert caught.value.message == f"2 configuration problems in {path}"
    assert caught.value.path == str(path)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "organizations: at least one organization is required;"),
        ("organizations = []", "organizations: at least one organization is required;"),
        ('organizations = "contoso"', "organizations: expected an array of tables, got a string"),
        ("organizations = [1]", "organizations[0]: expected a table, got an integer"),
        ("[organizations]\nslug = 'x'", "organizations: expected an array of tables, got a table"),
        ("backend = 'local'", "backend: expected a table, got a string"),
    ],
)
def test_malformed_top_level(tmp_path: Path, text: str, expected: str) -> None:
    found = problems(write(tmp_path, text))
    assert any(p.startswith(expected) for p in found), found


def test_unknown_keys_suggest_or_list_valid_keys(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        BACKEND + "[schedul]\ninterval_minutes = 5\n" + org(extra="zzz = 1\nnmae = 'x'"),
    )
    from cardsync.config import ORGANIZATION

    assert problems(path) == [
        "organizations[0].zzz: unknown key; valid keys here: "
        + ", ".join(ORGANIZATION.fields),
        "organizations[0].nmae: unknown key, did you mean 'name'?",
        "schedul: unknown key, did you mean 'schedule'?",
    ]
    assert list(ORGANIZATION.fields)[:3] == ["slug", "name", "template"]


def test_missing_required_keys(tmp_path: Path) -> None:
    path = write(tmp_path, BACKEND + "[[organizations]]\n[organizations.entra]\n")
    assert problems(path) == [
        "organizations[0].slug: required key is missing",
        "organizations[0].entra.tenant_id: required key is missing",
        "organizations[0].entra.client_id: required key is missing",
        "organizations[0].entra: set exactly one of client_secret and certificate_path",
    ]


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ('interval_minutes = "40"', "expected an integer, got a string"),
        ("interval_minutes = true", "expected an integer, got a boolean"),
        ("interval_minutes = 40.0", "expected an integer, got a float"),
        ("interval_minutes = 1441", "must be between 1 and 1440, got 1441"),
    ],
)
def test_interval_type_and_range(tmp_path: Path, line: str, problem: str) -> None:
    path = write(tmp_path, BACKEND + f"[schedule]\n{line}\n" + org())
    assert problems(path) == [f"schedule.interval_minutes: {problem}"]


@pytest.mark.parametrize(
    ("tenant", "ok"),
    [(TENANT, True), ("contoso.onmicrosoft.com", True), ("contoso", False), ("common.", False)],
)
def test_tenant_id_is_a_guid_or_a_domain(tmp_path: Path, tenant: str, ok: bool) -> None:
    path = write(tmp_path, BACKEND + org().replace(TENANT, tenant))
    if ok:
        assert load(path, env=ENV).organizations[0].entra.tenant_id == tenant
    else:
        assert problems(path) == [
            "organizations[0].entra.tenant_id: expected a GUID or a domain like"
            " contoso.onmicrosoft.com"
        ]


# --- credentials: exactly one of secret / certificate ---------------------------------


def test_secret_and_certificate_together_are_refused(tmp_path: Path) -> None:
    (tmp_path / "app.pem").write_text("x")
    entra = 'client_secret = "x"\ncertificate_path = "app.pem"'
    assert problems(write(tmp_path, BACKEND + org(entra=entra))) == [
        "organizations[0].entra: set exactly one of client_secret and certificate_path, not both"
    ]


def test_certificate_must_exist_and_password_needs_it(tmp_path: Path) -> None:
    entra = 'client_secret = "x"\ncertificate_password = "pw-secret"'
    path = write(tmp_path, BACKEND + org(entra=entra) + org("b", 'certificate_path = "no.pem"'))
    assert problems(path) == [
        "organizations[0].entra.certificate_password: is only used with certificate_path",
        f"organizations[1].entra.certificate_path: file not found: {tmp_path / 'no.pem'}",
    ]


# --- templates -------------------------------------------------------------------------


def test_builtin_templates_come_from_the_package() -> None:
    assert {"classic", "minimal"} <= set(builtin_templates())


def test_template_folder_is_relative_to_the_config_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "conf" / "brand").mkdir(parents=True)
    path = write(tmp_path / "conf", BACKEND + org(extra='template = "brand"'))
    monkeypatch.chdir(tmp_path)
    config = load(path, env=ENV)
    assert config.organizations[0].template == str(tmp_path / "conf" / "brand")


# --- backends ---------------------------------------------------------------------------


def test_memory_backend_options(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        [backend]
        type = "memory"
        base_url = "https://mem.example/"
        fail_user_ids = ["u1", "u2"]
        """
        + org(),
    )
    backend = load(path, env=ENV).backend
    assert backend == BackendConfig(
        "memory", {"base_url": "https://mem.example/", "fail_user_ids": ("u1", "u2")}
    )
    bare = load(write(tmp_path, '[backend]\ntype = "memory"\n' + org()), env=ENV).backend
    assert bare.options == {}


def test_memory_backend_rejects_local_keys(tmp_path: Path) -> None:
    path = write(
        tmp_path, '[backend]\ntype = "memory"\noutput = "x"\nfail_user_ids = [1]\n' + org()
    )
    assert problems(path) == [
        "backend.fail_user_ids: expected an array of strings, item 0 is an integer",
        "backend.output: unknown key; valid keys here: base_url, fail_user_ids",
    ]


def test_unknown_backend_type(tmp_path: Path) -> None:
    path = write(tmp_path, '[backend]\ntype = "locl"\n' + org())
    (found,) = problems(path)
    assert found.startswith("backend.type: expected an installed backend (local, memory")
    assert found.endswith(", got 'locl'; did you mean 'local'?")


def test_third_party_backend_options_pass_through(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cardsync.backends, "available", lambda: ["local", "memory", "s3"])
    path = write(
        tmp_path,
        """
        [backend]
        type = "s3"
        bucket = "cards"
        token = "${S3_TOKEN}"
        nested = { retries = 3 }
        """
        + org(),
    )
    config = load(path, env={**ENV, "S3_TOKEN": "s3-token-value"})

    assert config.backend.type == "s3"
    assert config.backend.options == {
        "bucket": "cards",
        "token": "s3-token-value",
        "nested": {"retries": 3},
    }
    assert "s3-token-value" not in repr(config)
    assert "s3-token-value" in config.secrets()

    assert problems(path, env=ENV) == ["backend.token: environment variable S3_TOKEN is not set"]


def test_local_backend_base_url_must_be_http(tmp_path: Path) -> None:
    path = write(tmp_path, '[backend]\noutput = "o"\nbase_url = "ftp://x.example"\n' + org())
    assert problems(path) == [
        "backend.base_url: expected a URL starting with http:// or https://, got 'ftp://x.example'"
    ]


# --- paths --------------------------------------------------------------------------------


def test_relative_paths_are_relative_to_the_config_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conf = tmp_path / "etc" / "cardsync"
    path = write(conf, '[state]\npath = "../data/state.db"\n' + BACKEND + org())
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)

    config = load("../etc/cardsync/cardsync.toml", env=ENV)

    assert config.path == path
    assert config.state.path == tmp_path / "etc" / "data" / "state.db"
    assert config.backend.options["output"] == conf / "site"


def test_home_is_expanded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    path = write(tmp_path, '[state]\npath = "~/cardsync.db"\n' + BACKEND + org())
    assert load(path, env=ENV).state.path == tmp_path / "home" / "cardsync.db"


# --- discovery ----------------------------------------------------------------------------


@pytest.fixture
def three_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    files = {
        name: write(tmp_path / name, BACKEND + org(name)) for name in ("explicit", "env", "cwd")
    }
    monkeypatch.chdir(tmp_path / "cwd")
    monkeypatch.setenv("CONTOSO_SECRET", SECRET)
    monkeypatch.delenv("CARDSYNC_CONFIG", raising=False)
    return files


def test_discovery_explicit_beats_env_beats_cwd(
    three_files: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert load().organizations[0].slug == "cwd"
    assert resolve_path(None) == three_files["cwd"]

    monkeypatch.setenv("CARDSYNC_CONFIG", str(three_files["env"]))
    assert load().organizations[0].slug == "env"
    assert resolve_path(None) == three_files["env"]

    assert load(three_files["explicit"]).organizations[0].slug == "explicit"
    assert resolve_path(str(three_files["explicit"])) == three_files["explicit"]


def test_env_mapping_is_used_for_discovery(three_files: dict[str, Path]) -> None:
    env = {"CARDSYNC_CONFIG": str(three_files["env"]), **ENV}
    assert load(env=env).organizations[0].slug == "env"
    assert resolve_path(None, env=env) == three_files["env"]


def test_relative_explicit_path_is_made_absolute(three_files: dict[str, Path]) -> None:
    assert resolve_path("../explicit/cardsync.toml") == three_files["explicit"]
    assert load("../explicit/cardsync.toml").path == three_files["explicit"]


@pytest.mark.parametrize(
    ("how", "said"),
    [
        ("explicit", "given with --config"),
        ("env", "from the CARDSYNC_CONFIG environment variable"),
        ("default", "the default when neither --config nor CARDSYNC_CONFIG is set"),
    ],
)
def test_missing_file_says_which_path_and_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str, said: str
) -> None:
    monkeypatch.chdir(tmp_path)
    missing = tmp_path / "nope.toml"
    env = {"CARDSYNC_CONFIG": str(missing)} if how == "env" else {}
    explicit = str(missing) if how == "explicit" else None
    expected = missing if how != "default" else tmp_path / "cardsync.toml"

    with pytest.raises(ConfigError) as caught:
        load(explicit, env=env)

    assert caught.value.problems == [f"config file {expected} not found ({said})"]
    assert caught.value.hint is not None
    assert "copy config.example.toml to cardsync.toml" in caught.value.hint


def test_a_folder_is_not_a_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, env={})
    assert caught.value.problems == [
        f"config file {tmp_path} (given with --config) is a folder, not a file"
    ]


# --- TOML syntax -----------------------------------------------------------------------------


def test_toml_syntax_error_has_line_and_column(tmp_path: Path) -> None:
    path = write(tmp_path, f'[backend]\noutput = "site"\nbase_url = {SECRET}\n')
    with pytest.raises(ConfigError) as caught:
        load(path, env={})
    assert caught.value.problems == ["TOML syntax error at line 3, column 12: Invalid value"]
    assert caught.value.path == str(path)
    assert "hunter2" not in str(caught.value)


def test_toml_syntax_error_at_end_of_file(tmp_path: Path) -> None:
    path = write(tmp_path, "[backend]\noutput =")
    with pytest.raises(ConfigError) as caught:
        load(path, env={})
    assert caught.value.problems == [
        "TOML syntax error at line 2, column 9 (end of file): Invalid value"
    ]


def test_file_must_be_utf8(tmp_path: Path) -> None:
    path = tmp_path / "cardsync.toml"
    path.write_bytes(b'name = "\xff"\n')
    with pytest.raises(ConfigError) as caught:
        load(path, env={})
    assert caught.value.problems == ["the file is not UTF-8 text"]


# --- import cost ------------------------------------------------------------------------------


def test_config_import_stays_light() -> None:
    code = (
        "import sys, cardsync.config\n"
        "heavy = {'jinja2', 'msgraph', 'azure', 'cardsync.backends'} & set(sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    src = Path(__file__).resolve().parents[1] / "src"
    subprocess.run([sys.executable, "-c", code], check=True, env={"PYTHONPATH": str(src)})


# Lifecycle keys ------------------------------------------------------------------


def test_lifecycle_keys_are_optional_with_documented_defaults(tmp_path: Path) -> None:
    config = load(write(tmp_path, BACKEND + org()), env=ENV)
    [o] = config.organizations
    assert (o.domains, o.seats, o.max_deletes, o.on_disable, o.people) == (
        (), None, 500, "keep", ()
    )
    assert (o.entra.scope, o.entra.group_ids, o.entra.include_guests) == ("all", (), False)
    assert o.entra.service_principal_id is None
    assert config.domain_assignment is False


def test_lifecycle_keys_are_read(tmp_path: Path) -> None:
    group = "AAAAAAAA-BBBB-CCCC-DDDD-EEEEEEEEEEEE"
    text = "domain_assignment = true\n" + BACKEND + org(
        extra=(
            'domains = ["Contoso.com", "eu.contoso.com"]\nseats = 10\nmax_deletes = 3\n'
            'on_disable = "deactivate"\n'
            '[[organizations.people]]\nmail = "Boss@Contoso.com"\nrole = "owner"\n'
            '[[organizations.people]]\nmail = "it@contoso.com"\nrole = "admin"\n'
        ),
        entra=f'client_secret = "${{CONTOSO_SECRET}}"\nscope = "groups"\n'
        f'group_ids = ["{group}"]\ninclude_guests = true',
    )
    config = load(write(tmp_path, text), env=ENV)
    [o] = config.organizations
    assert config.domain_assignment is True
    assert o.domains == ("contoso.com", "eu.contoso.com")
    assert (o.seats, o.max_deletes, o.on_disable) == (10, 3, "deactivate")
    assert [(p.mail, p.role) for p in o.people] == [
        ("boss@contoso.com", "owner"), ("it@contoso.com", "admin")
    ]
    assert (o.entra.scope, o.entra.group_ids, o.entra.include_guests) == (
        "groups", (group.lower(),), True
    )


def test_lifecycle_problems_are_collected(tmp_path: Path) -> None:
    people = (
        '[[organizations.people]]\nmail = "a@contoso.com"\nrole = "owner"\n'
        '[[organizations.people]]\nmail = "b@contoso.com"\nrole = "owner"\n'
        '[[organizations.people]]\nmail = "c@contoso.com"\nrole = "boss"\n'
    )
    text = BACKEND + org(
        extra='domains = ["contoso.com", "not a domain"]\nseats = -1\non_disable = "delete"\n'
        + people,
        entra='client_secret = "${CONTOSO_SECRET}"\nscope = "groups"',
    )
    found = problems(write(tmp_path, text), ENV)
    joined = "\n".join(found)
    assert "organizations[0].domains: item 1 ('not a domain') is not a domain" in joined
    assert "organizations[0].seats: must be between 0 and 10000000" in joined
    assert "organizations[0].on_disable: expected one of 'keep', 'deactivate'" in joined
    assert "organizations[0].people[2].role: expected one of" in joined
    assert "organizations[0].people: at most one owner, found 2" in joined
    assert 'organizations[0].entra.group_ids: scope = "groups" needs at least one group' in joined


def test_a_domain_belongs_to_one_organization(tmp_path: Path) -> None:
    text = BACKEND + org(extra='domains = ["contoso.com"]') + org(
        "fabrikam", extra='domains = ["fabrikam.com", "CONTOSO.com"]'
    )
    assert problems(write(tmp_path, text), ENV) == [
        "organizations[1].domains: domain 'contoso.com' is also listed by organizations[0];"
        " a domain belongs to one"
    ]
