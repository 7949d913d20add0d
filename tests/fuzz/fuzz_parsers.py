"""Coverage-guided fuzzing (atheris) of everything that reads untrusted text.

    python tests/fuzz/fuzz_parsers.py TARGET [libFuzzer flags, e.g. -runs=100000]

Targets and what must hold for every input:
  target     unsafe_target_reason answers (a reason or None), never raises
  auth       token_from_authorization answers, never raises
  manifest   parse_text raises nothing but ManifestError
  template   render_string raises nothing but TemplateError, and its output never holds
             a value from the environment or a file
  rewrite    the pypi link rewriter raises nothing but RegistryDataError (a page it cannot
             read is the registry's failure), and a rewritten page never points at a
             host the mapper did not choose
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile

import atheris

with atheris.instrument_imports():
    from connectors.api import manifests
    from connectors.api.errors import ManifestError, RegistryDataError, TemplateError
    from connectors.auth import credentials
    from connectors.classes import pypi_links
    from connectors.proxy import safety
    from connectors.rendering import render

SENTINEL = "fuzz-sentinel-5d41402abc"
os.environ["CONNECTORS_FUZZ_SENTINEL"] = SENTINEL
with tempfile.NamedTemporaryFile("w", delete=False, suffix=".txt") as _secret_file:
    _secret_file.write(SENTINEL)
SECRET_FILE = _secret_file.name


def _text(data: bytes) -> str:
    text: str = atheris.FuzzedDataProvider(data).ConsumeUnicodeNoSurrogates(len(data))
    return text


def fuzz_target(data: bytes) -> None:
    reason = safety.unsafe_target_reason(_text(data))
    assert reason is None or isinstance(reason, str)


def fuzz_auth(data: bytes) -> None:
    token = credentials.token_from_authorization(_text(data))
    assert token is None or isinstance(token, str)


def fuzz_manifest(data: bytes) -> None:
    with contextlib.suppress(ManifestError):
        manifests.parse_text(_text(data), source="fuzz.yaml", namespace="default")


def fuzz_template(data: bytes) -> None:
    template = _text(data) + f"{{{{ '{SECRET_FILE}' }}}}"
    variables = {"params": {"a": "b"}, "context": {"token": "t"}, "proxy": {"url": "http://p"}}
    try:
        out = render.render_string(template, variables, what="fuzz")
    except TemplateError:
        return
    assert SENTINEL not in out


def fuzz_rewrite(data: bytes) -> None:
    provider = atheris.FuzzedDataProvider(data)
    kind = provider.PickValueInList(["text/html", "application/vnd.pypi.simple.v1+json"])
    body = provider.ConsumeBytes(len(data))

    def mapper(url: str, sha256: str | None) -> str | None:
        return "http://proxy.test/x" if url.startswith("https://registry.test/") else None

    try:
        out = pypi_links.rewrite(body, kind, "https://registry.test/simple/p/", mapper)
    except RegistryDataError:
        return
    assert isinstance(out, bytes)
    assert b"evil.test" not in out or b"evil.test" in body


TARGETS = {
    "target": fuzz_target,
    "auth": fuzz_auth,
    "manifest": fuzz_manifest,
    "template": fuzz_template,
    "rewrite": fuzz_rewrite,
}


def main() -> None:
    name = sys.argv[1]
    atheris.Setup([sys.argv[0], *sys.argv[2:]], TARGETS[name])
    atheris.Fuzz()


if __name__ == "__main__":
    main()
