from setuptools import find_packages, setup

setup(
    name="greenchat",
    version="1.0.0",
    description="A chat server and terminal client on gevent green threads",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["greenchat", "greenchat.*"]),
    install_requires=["gevent>=25.9.1", "cryptography>=42"],
    extras_require={"test": ["pytest>=7", "hypothesis>=6", "pexpect>=4", "pyte>=0.8"]},
    entry_points={
        "console_scripts": [
            "greenchat-server=greenchat.cli:run_server",
            "greenchat-client=greenchat.cli:run_client",
            "greenchat-admin=greenchat.admin:run",
        ],
    },
)
