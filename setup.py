import ast
import os

from setuptools import find_packages, setup


def read_version():
    """__version__ of greenchat/__init__.py, read without importing the package."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "greenchat", "__init__.py")
    with open(path, encoding="utf-8") as f:
        for node in ast.parse(f.read()).body:
            if isinstance(node, ast.Assign) and any(
                    isinstance(t, ast.Name) and t.id == "__version__" for t in node.targets):
                return ast.literal_eval(node.value)
    raise RuntimeError(f"no __version__ in {path}")


setup(
    name="greenchat",
    version=read_version(),
    description="A chat server and terminal client on gevent green threads",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["greenchat", "greenchat.*"]),
    # The web client's page: plain files served as they are.
    package_data={"greenchat": ["web/*.html", "web/*.js", "web/*.css", "web/*.png",
                                "web/*.svg", "web/*.ico"]},
    install_requires=["gevent>=25.9.1", "cryptography>=42", "wsproto>=1.2"],
    # playwright drives the system's Chromium in tests/test_web_browser.py
    # (never `playwright install`: .ci/run installs Debian's chromium).
    extras_require={"test": ["pytest>=7", "hypothesis>=6", "pexpect>=4", "pyte>=0.8",
                             "playwright>=1.40"]},
    entry_points={
        "console_scripts": [
            "greenchat-server=greenchat.cli:run_server",
            "greenchat-client=greenchat.cli:run_client",
            "greenchat-admin=greenchat.admin:run",
        ],
    },
)
