"""Installs the repository's top-level folders under Tidemark's own namespace.

The folders stay where users expect them (`connectors/`, `sinks/`, `stream_processors/`,
`simulator/` beside `tidemark/`), but they install as `tidemark.connectors`, ... so that
installing Tidemark never creates top-level packages other distributions also publish
(`connectors` and `simulator` are names of PyPI projects). Editable installs map them the
same way. Everything else about the distribution is in pyproject.toml.
"""

from setuptools import find_packages, setup

FOLDERS = ("connectors", "sinks", "stream_processors", "simulator")

packages = find_packages(include=["tidemark", "tidemark.*"])
package_dir = {"tidemark": "tidemark"}
for folder in FOLDERS:
    package_dir[f"tidemark.{folder}"] = folder
    packages += [f"tidemark.{name}" for name in find_packages(include=[folder, f"{folder}.*"])]

setup(packages=packages, package_dir=package_dir)
