"""The build step pyproject.toml cannot declare: atoms.metta (the policy) and alembic.ini are read
from the folder that holds the top-level modules (helpers/wallet/rules.py, database.py), so they
go to the top of the wheel, beside app.py. Everything else is in pyproject.toml."""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

TOP_LEVEL_FILES = ("atoms.metta", "alembic.ini")


class BuildWithTopLevelFiles(build_py):
    def run(self) -> None:
        super().run()
        for name in TOP_LEVEL_FILES:
            self.copy_file(str(Path(__file__).with_name(name)), str(Path(self.build_lib) / name))

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        return [*super().get_outputs(include_bytecode), *(str(Path(self.build_lib) / n) for n in TOP_LEVEL_FILES)]


setup(cmdclass={"build_py": BuildWithTopLevelFiles})
