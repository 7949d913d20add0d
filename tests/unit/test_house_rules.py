"""House rules import-linter cannot state: aiohttp's server (a submodule of an external
package) is imported only where a server lives, the proxy and the standalone server."""

from __future__ import annotations

import ast
from pathlib import Path

SOURCE = Path(__file__).parents[2] / "src" / "connectors"
SERVERS = ("proxy/", "standalone/server.py")


def imports_aiohttp_web(tree: ast.AST) -> bool:
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            if any(
                a.name == "aiohttp.web" or a.name.startswith("aiohttp.web.") for a in node.names
            ):
                return True
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.module.startswith("aiohttp.web"):
                return True
            if node.module == "aiohttp" and any(a.name.startswith("web") for a in node.names):
                return True
    return False


def test_the_rule_sees_each_way_of_importing_the_server():
    for text in (
        "import aiohttp.web",
        "from aiohttp import web",
        "from aiohttp.web import Response",
    ):
        assert imports_aiohttp_web(ast.parse(text)), text
    assert not imports_aiohttp_web(ast.parse("import aiohttp\nfrom aiohttp import ClientSession"))


def test_aiohttps_server_is_imported_only_where_a_server_lives():
    offenders = [
        str(path.relative_to(SOURCE))
        for path in sorted(SOURCE.rglob("*.py"))
        if not str(path.relative_to(SOURCE)).startswith(SERVERS)
        and imports_aiohttp_web(ast.parse(path.read_text()))
    ]
    assert offenders == []
