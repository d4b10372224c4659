"""The recipes of the images the builder makes: names, tags, aliases, parents and pip packages.

Data only (and the lookups on it): :mod:`.images` builds them, :mod:`._errors` names them in the hint
for a missing image. Kept apart from the builder so the error mapping needs no import of the builder
(which itself imports the error mapping).
"""

from __future__ import annotations

from collections.abc import Mapping

import attrs

__all__ = [
    "DEBIAN_PACKAGES",
    "RECIPES",
    "UPSTREAM_TAGS",
    "ImageRecipe",
    "missing_image_hint",
    "recipe_for_tag",
]

DEBIAN_PACKAGES = ("python3", "python3-pip", "python3-venv", "ca-certificates")
#: tags of upstream images: the builder never gives them to an image of its own
UPSTREAM_TAGS = ("python:3.11-slim", "python:3.11")


@attrs.frozen(kw_only=True)
class ImageRecipe:
    """One buildable image: its tag, what it builds on, the pip packages it adds."""

    name: str
    tag: str
    description: str
    parent: str | None = None
    pip_packages: tuple[str, ...] = ()
    #: extra tags given to the same image (never over an image the builder did not make)
    aliases: tuple[str, ...] = ()


RECIPES: dict[str, ImageRecipe] = {
    "base": ImageRecipe(
        name="base",
        tag="alphora/sandbox:base",
        description="Debian bookworm, Python 3.11, pip, venv, CA certificates; non-root user",
        aliases=("alphora/sandbox:minimal",),
    ),
    "datascience": ImageRecipe(
        name="datascience",
        tag="alphora/sandbox:datascience",
        description="base + numpy, pandas, scikit-learn",
        parent="base",
        pip_packages=("numpy", "pandas", "scikit-learn"),
    ),
    "ml": ImageRecipe(
        name="ml",
        tag="alphora/sandbox:ml",
        description="base + torch (CPU), transformers",
        parent="base",
        pip_packages=("torch", "transformers"),
    ),
}
#: ``minimal`` is the base image under another tag (it is already minimal: no compilers, no docs)
_NAME_ALIASES = {"minimal": "base"}


def recipe_for_tag(
    tag: str, recipes: Mapping[str, ImageRecipe] | None = None, aliases: Mapping[str, str] | None = None
) -> ImageRecipe | None:
    """The recipe that builds ``tag`` (a recipe name, a tag or an alias), if any.

    ``recipes``/``aliases`` default to :data:`RECIPES` and the name aliases (the builder passes its own).
    """
    recipes = RECIPES if recipes is None else recipes
    key = (_NAME_ALIASES if aliases is None else aliases).get(tag, tag)
    if key in recipes:
        return recipes[key]
    for recipe in recipes.values():
        if tag == recipe.tag or tag in recipe.aliases:
            return recipe
    return None


def missing_image_hint(image: str) -> str:
    """What to do about a sandbox image the engine does not have."""
    recipe = recipe_for_tag(image)
    if recipe is not None:
        return (
            f"Build it locally (no registry needed): alphora-sandbox docker build {recipe.name}  "
            f"(or: python -m alphora.sandbox_docker build {recipe.name})"
        )
    return (
        f"Pull it where a registry answers (docker pull {image}), or use an image the engine has (any image "
        f"with python3 works); without a registry, `alphora-sandbox docker build base` makes "
        f"alphora/sandbox:base (then docker_image='alphora/sandbox:base')"
    )
