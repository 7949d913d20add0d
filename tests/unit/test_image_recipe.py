"""The test node's project image is built by following the Dockerfile itself, so the two
cannot drift: every instruction is either followed or refused."""

from __future__ import annotations

import pytest

from tests.support import images

DOCKERFILE = (images.ROOT / "Dockerfile").read_text()


def test_the_recipe_follows_the_dockerfiles_stages_and_runtime_settings():
    recipe = images.dockerfile_recipe(DOCKERFILE)
    assert recipe.build_copies == [(["pyproject.toml", "README.md"], "./"), (["src"], "./src")]
    assert recipe.build_run.startswith("pip wheel ") and "/wheels" in recipe.build_run
    assert "--find-links /wheels connectors" in recipe.final_run
    # What the chart's Pods rely on: the user they run as and the command.
    assert recipe.config.user == "65532:65532"
    assert recipe.config.entrypoint == ["connectors"]
    assert recipe.config.cmd == ["--help"]


@pytest.mark.parametrize(
    "added",
    [
        "ENV CONNECTORS_MODE=fast",
        "EXPOSE 8080",
        "COPY deploy /deploy",
        "WORKDIR /app",
        "HEALTHCHECK CMD connectors --help",
    ],
)
def test_an_instruction_the_recipe_does_not_follow_is_refused(added: str):
    changed = DOCKERFILE.replace('ENTRYPOINT ["connectors"]', f'{added}\nENTRYPOINT ["connectors"]')
    assert changed != DOCKERFILE
    with pytest.raises(ValueError, match="is not followed here"):
        images.dockerfile_recipe(changed)


def test_a_third_stage_is_refused():
    with pytest.raises(ValueError, match="expected a build stage and a final stage"):
        images.dockerfile_recipe(DOCKERFILE + "\nFROM scratch\n")
