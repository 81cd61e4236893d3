"""Write the course notebooks (Korean and English) from notebooks/src/*.py; optionally run them.

Each source is a Python file in the "percent" cell format: ``# %%`` starts a code cell,
``# %% [markdown] ko`` / ``# %% [markdown] en`` a markdown cell of one language (its lines start
with ``# ``). Every notebook begins with the same first code cell: it reads ``CNNKIT_SMALL`` (the
small-data switch the test suite sets) and, in the Korean notebooks, sets ``CNNKIT_LANG=ko`` so
that class names in figures and predictions are Korean.

    python notebooks/build.py            # notebooks/ko/*.ipynb and notebooks/en/*.ipynb, no outputs
    python notebooks/build.py --execute  # also run them into notebooks/executed/{ko,en}/ with outputs
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import nbformat

HERE = Path(__file__).resolve().parent
LANGS = ("ko", "en")
FIRST_CELL = {
    "ko": (
        "import os\n\n"
        "# CNNKIT_SMALL=1: 작은 데이터로 빠르게 (테스트가 이렇게 실행)\n"
        'SMALL = os.environ.get("CNNKIT_SMALL") == "1"\n'
        'os.environ["CNNKIT_LANG"] = "ko"  # 그림과 예측의 클래스 이름을 한국어로'
    ),
    "en": (
        "import os\n\n"
        "# CNNKIT_SMALL=1: a small subset, quick (as the tests run it)\n"
        'SMALL = os.environ.get("CNNKIT_SMALL") == "1"\n'
        'os.environ["CNNKIT_LANG"] = "en"'
    ),
}
CELL = re.compile(r"^# %%(?: \[markdown\] (ko|en))?\s*$")


def sources() -> list[Path]:
    return sorted((HERE / "src").glob("[0-9][0-9]_*.py"))


def build(source: Path, lang: str) -> nbformat.NotebookNode:
    """The notebook of ``source`` in ``lang``: its markdown cells of that language and every code cell."""
    cells = [nbformat.v4.new_code_cell(FIRST_CELL[lang])]
    kind, lines = None, []

    def flush() -> None:
        text = "\n".join(lines).strip("\n")
        if kind == "code" and text:
            cells.append(nbformat.v4.new_code_cell(text))
        elif kind == lang and text:
            cells.append(nbformat.v4.new_markdown_cell(re.sub(r"^# ?", "", text, flags=re.M)))

    for line in source.read_text(encoding="utf-8").splitlines():
        match = CELL.match(line)
        if match:
            flush()
            kind, lines = match.group(1) or "code", []
        elif kind is not None:
            lines.append(line)
    flush()
    for k, cell in enumerate(cells):
        cell["id"] = f"{source.stem[:2]}-{lang}-{k}"  # stable ids: rebuilding changes nothing
    nb = nbformat.v4.new_notebook(cells=cells)
    nb.metadata = {
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
        "language_info": {"name": "python"},
    }
    return nb


def notebook_path(source: Path, lang: str, root: Path = HERE) -> Path:
    return root / lang / f"{source.stem}.ipynb"


def execute(nb: nbformat.NotebookNode, cwd: Path, timeout: int = 1200) -> nbformat.NotebookNode:
    from nbclient import NotebookClient

    # A cell's printed output can reach the client after the cell has finished; nbclient waits 4 s
    # for it by default and then silently drops it. On a busy machine that lost a printed line:
    # wait a minute, and fail rather than drop.
    client = NotebookClient(
        nb,
        timeout=timeout,
        kernel_name="python3",
        resources={"metadata": {"path": str(cwd)}},
        iopub_timeout=60,
        raise_on_iopub_timeout=True,
    )
    client.execute()
    return nb


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--execute", action="store_true", help="also run them into notebooks/executed/")
    args = parser.parse_args(argv)
    for source in sources():
        for lang in LANGS:
            nb = build(source, lang)
            path = notebook_path(source, lang)
            path.parent.mkdir(parents=True, exist_ok=True)
            nbformat.write(nb, path)
            if args.execute:
                out = notebook_path(source, lang, HERE / "executed")
                out.parent.mkdir(parents=True, exist_ok=True)
                nbformat.write(execute(nb, out.parent), out)
                print(f"ran {out.relative_to(HERE.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
