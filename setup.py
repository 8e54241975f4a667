"""Build hook for what pyproject.toml cannot say: the top-level ``prompts/`` folder ships inside the package as
``llmad/prompts`` (``llmad.render.prompts_dir`` looks there in an installed wheel, and in ``../prompts`` in a
checkout). Each template folder is a data-only package, so setuptools copies it without warnings."""
from pathlib import Path

from setuptools import find_packages, setup

PROMPTS = sorted(d.name for d in Path(__file__).resolve().parent.joinpath("prompts").iterdir() if d.is_dir())

setup(packages=[*find_packages(include=["llmad", "llmad.*"]), "llmad.prompts",
                *(f"llmad.prompts.{d}" for d in PROMPTS)],
      package_dir={"llmad.prompts": "prompts"})  # package data (the *.j2 files): pyproject.toml
