"""Every `cnnkit ...` command and Python block of README*.md and docs/*.md, checked against the code.

Commands are taken from ```bash blocks (one per line, `\\` continuations joined, `# ...` comments
and `VAR=value` prefixes dropped) and from inline code spans that start with `cnnkit `:

- a synopsis (placeholders such as RUN, IMAGE..., [--batch N], a|b): its command exists and every
  `--flag` it names is one that command (or that task of `cnnkit train`) takes;
- a concrete command is parsed by the real parser (``parse_command_line``), with its model names
  checked against the registry and its data names against what `cnnkit train` reads;
- the commands of RUN_COMMANDS (seconds each) also run: when a ```text block follows the
  command (in the same paragraph or the block right before it), the printed lines must equal it.

Python blocks run top to bottom in one namespace per document, in a scratch folder holding
``photo.jpg`` (scikit-learn's china.jpg), with ``load_fashion_mnist`` cut to a small real subset
(the tiny-data switch); a line whose comment names an exception (``# ValueError: ...``) must
raise it. Blocks of NOT_RUN (they need a trained run folder, downloads or the reader's own
files) have their imports run and their code compiled.
"""

from __future__ import annotations

import ast
import functools
import re
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = sorted([*ROOT.glob("README*.md"), *(ROOT / "docs").glob("*.md")])

# Subcommands whose documented examples finish in seconds: they run and their output is compared.
RUN_COMMANDS = {"models", "summary", "shape"}
# How every other subcommand's concrete examples are checked, and why they do not run here.
PARSE_ONLY = {
    "train": "trains for minutes to hours",
    "finetune": "trains, on the reader's own image folder",
    "evaluate": "needs a trained run folder",
    "report": "needs a trained run folder",
    "predict": "reads the reader's own images or downloads weights",
    "detect": "needs a trained detection run",
    "segment": "needs a trained segmentation run",
    "viz": "draws a trained run folder's figures",
    "export": "writes and checks a file on up to 10,000 test images (tests/export run it)",
    "studio": "starts a web server that runs until stopped (tests/studio drive it)",
}
# Python blocks that cannot run here (file, a line the block holds): why.
NOT_RUN = {
    ("pretrained.md", 'weights="IMAGENET1K_V2"'): "downloads ImageNet weights; needs the reader's files",
    ("pretrained.md", 'load_image_folder("flowers/"'): "reads the reader's own image folder",
    ("see-inside.md", 'load_run("/tmp/runs/hongong-full")'): "needs the full training run",
    ("transfer.md", 'pretrained_model("hongong_cnn", "runs/fashion-run"'): "needs a trained run folder",
    ("pretrained.md", 'weights="out/course_cnn.weights.h5"'): "needs the Keras file the script writes",
}
PLACEHOLDER = re.compile(r"^\[|^[A-Z_]+\]$|\||\.\.\.|^[A-Z][A-Z_]*(\.\.\.)?$|^[A-Z]\[")
SMALL_TRAIN, SMALL_TEST = 300, 100  # the tiny-data switch of the Python blocks


@dataclass
class Command:
    doc: str
    line: int
    text: str
    inline: bool = False

    @property
    def argv(self) -> list[str]:
        images = str(sklearn_images())
        words = shlex.split(self.text.replace("$IMAGES", images).replace("\\|", "|"))
        while words and re.fullmatch(r"[A-Z_]+=\S*", words[0]):
            words.pop(0)
        return words[1:] if words and words[0] == "cnnkit" else words

    @property
    def synopsis(self) -> bool:
        """Placeholders, or a mention in prose that leaves out what the command needs (``cnnkit
        evaluate --int8``): only its command and flags are checked."""
        if any(PLACEHOLDER.search(w) for w in self.argv) or self.argv[0].startswith("-"):
            return True
        return self.inline and lacks_required(tuple(self.argv))

    @property
    def command(self) -> str:
        return next((w for w in self.argv if not w.startswith("-")), "")

    def __str__(self) -> str:
        return f"{self.doc}:{self.line}: cnnkit {' '.join(self.argv)}"


@dataclass
class Block:
    doc: str
    line: int  # the opening fence
    end: int  # the closing fence
    lang: str
    text: str


@functools.cache
def lacks_required(argv: tuple[str, ...]) -> bool:
    import contextlib
    import io

    from cnnkit.cli.__main__ import parse_command_line

    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            parse_command_line(list(argv))
    except SystemExit:
        return "arguments are required" in err.getvalue()
    return False


def sklearn_images() -> Path:
    import sklearn.datasets

    return Path(sklearn.datasets.__file__).parent / "images"


def read_doc(path: Path) -> tuple[list[Block], list[Command]]:
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks, commands = [], []
    i = 0
    while i < len(lines):
        fence = re.match(r"^```(\w*)", lines[i])
        if not fence:
            for span in re.findall(r"`(cnnkit [^`]+)`", lines[i]):
                commands.append(Command(path.name, i + 1, span, inline=True))
            i += 1
            continue
        end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
        block = Block(path.name, i + 1, end + 1, fence.group(1), "\n".join(lines[i + 1 : end]))
        blocks.append(block)
        if block.lang in ("bash", "sh", "console"):
            joined = re.sub(r"\\\n\s*", " ", block.text)
            for k, raw in enumerate(joined.splitlines()):
                text = re.sub(r"\s+#.*$", "", raw.strip().removeprefix("$ "))
                text = text.removeprefix("./run.sh cnnkit ").removeprefix("export ")
                if re.match(r"^([A-Z_]+=\S+\s+)*cnnkit\s", text):
                    commands.append(Command(path.name, block.line + 1 + k, text))
        i = end + 1
    return blocks, commands


ALL = {path.name: read_doc(path) for path in DOCS}
COMMANDS = [c for _, commands in ALL.values() for c in commands]


def expected_output(doc: str, command: Command) -> str | None:
    """The ```text block that shows this command's output, if the doc has one."""
    blocks, commands = ALL[doc]
    for k, block in enumerate(blocks):
        if block.lang not in ("text", ""):
            continue
        # The command shown in the prose since the block before, or in a bash block right before.
        previous = blocks[k - 1] if k else None
        start = previous.end if previous else 0
        if previous and previous.lang == "bash":
            start = blocks[k - 2].end if k > 1 else 0
        shown = [c for c in commands if start < c.line < block.line and not c.synopsis]
        if shown and shown[-1] is command:
            return block.text
    return None


def subparser(parser, name: str):
    import argparse

    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices.get(name)
    return None


def options_of(argv: list[str]) -> set[str]:
    """Every option string the command (for `train`, the task) of ``argv`` takes."""
    from cnnkit.cli.__main__ import build_parser

    parser = build_parser()
    command = subparser(parser, argv[0])
    assert command is not None, f"no command {argv[0]!r}"
    if argv[0] == "train":
        known = set(subparser(command, "classify").prog and command._actions[-1].choices)
        words = [w.strip("[]").split("|") for w in argv[1:] if not w.startswith("-")]
        tasks = next((ws for ws in words if set(ws) <= known), ["classify"])
        if "--task" in argv:
            tasks = argv[argv.index("--task") + 1].split("|")
        # `--task TASK` is the older spelling of `train TASK` (cli.train.task_first)
        return {"--task"}.union(*(options_of_parser(subparser(command, t) or command) for t in tasks))
    return options_of_parser(command)


def options_of_parser(parser) -> set[str]:
    return {s for action in parser._actions for s in action.option_strings}


@pytest.mark.parametrize("command", [c for c in COMMANDS if c.synopsis], ids=str)
def test_synopsis_names_real_commands_and_flags(command):
    from cnnkit.cli.__main__ import COMMANDS as CLI_COMMANDS

    argv = command.argv
    if argv[0].startswith("-"):  # `cnnkit --help`, `cnnkit --version`
        from cnnkit.cli.__main__ import build_parser

        assert set(argv) <= options_of_parser(build_parser()), f"{command}: no such option"
        return
    names = command.command.split("|")
    assert all(n in CLI_COMMANDS for n in names), f"{command}: no such command"
    flags = {w.strip("[]").partition("=")[0] for w in argv if w.strip("[").startswith("--")}
    missing = flags - options_of(argv)
    assert not missing, f"{command}: `cnnkit {argv[0]}` does not take {sorted(missing)}"


@pytest.mark.parametrize("command", [c for c in COMMANDS if not c.synopsis], ids=str)
def test_concrete_command_parses_with_real_names(command):
    from cnnkit.cli.__main__ import parse_command_line
    from cnnkit.io.weights import is_torchvision_weights_name
    from cnnkit.models import list_models

    assert command.command in RUN_COMMANDS | set(PARSE_ONLY), f"{command}: add it to a table above"
    args = parse_command_line(command.argv)  # SystemExit(2) on an unknown flag or command
    models = list_models()
    name = getattr(args, "model", None) or getattr(args, "target", None)
    exported = isinstance(name, str) and name.endswith((".onnx", ".pt2"))  # `cnnkit export` files
    if isinstance(name, str) and "/" not in name and name != "fashion" and not exported:
        assert name in models, f"{command}: {name!r} is not a registered model"
    data = getattr(args, "data", None)
    if isinstance(data, str):
        assert data == "fashion-mnist" or "/" in data or ":" in data, f"{command}: unknown data {data!r}"
    weights = getattr(args, "weights", None)
    if isinstance(weights, str) and "/" not in weights and "." not in weights and weights != "fashion":
        assert is_torchvision_weights_name(weights), f"{command}: unknown weights {weights!r}"


@pytest.mark.parametrize(
    "command", [c for c in COMMANDS if c.command in RUN_COMMANDS and not c.synopsis], ids=str
)
def test_fast_command_prints_what_the_doc_shows(command):
    code, out = run_once(tuple(command.argv))
    assert code == 0, f"{command} failed"
    shown = expected_output(command.doc, command)
    if shown is not None:
        printed = [line.rstrip() for line in out.splitlines()]
        for k, line in enumerate(line.rstrip() for line in shown.splitlines()):
            got = printed[k] if k < len(printed) else "<nothing>"
            assert got == line, f"{command}: the doc shows {line!r}, the command prints {got!r}"
        assert len(printed) == len(shown.splitlines()), f"{command}: prints more lines than the doc shows"


@functools.cache
def run_once(argv: tuple[str, ...]) -> tuple[int, str]:
    """Exit code and printed text of a command (each distinct command runs once per session)."""
    import contextlib
    import io

    from cnnkit.cli.__main__ import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(list(argv))
    return code, out.getvalue()


def python_blocks(doc: str) -> list[Block]:
    return [b for b in ALL[doc][0] if b.lang == "python"]


def not_run_reason(block: Block) -> str | None:
    reasons = (why for (doc, line), why in NOT_RUN.items() if doc == block.doc and line in block.text)
    return next(reasons, None)


@pytest.fixture
def scratch(tmp_path, monkeypatch, fashion):
    """A working folder with the files the blocks name, and Fashion-MNIST cut to a small subset."""
    import cnnkit
    import cnnkit.data

    shutil.copy(sklearn_images() / "china.jpg", tmp_path / "photo.jpg")
    train, test = fashion
    small = (train.take(SMALL_TRAIN, seed=0), test.take(SMALL_TEST, seed=0))
    for module in (cnnkit, cnnkit.data):
        monkeypatch.setattr(module, "load_fashion_mnist", lambda *a, **k: small)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def run_statement(source: str, namespace: dict) -> None:
    """Run one top-level statement; one whose comment names an exception must raise it."""
    raises = re.search(r"#\s*([A-Z]\w*Error)\b", source)
    code = compile(source, "<doc>", "exec")
    if raises:
        with pytest.raises(getattr(__builtins__, raises.group(1), Exception)):
            exec(code, namespace)
    else:
        exec(code, namespace)


@pytest.mark.parametrize("doc", [d for d in ALL if python_blocks(d)])
def test_python_blocks_run(doc, scratch):
    namespace: dict = {"__name__": "__doc_example__"}
    for block in python_blocks(doc):
        tree = ast.parse(block.text)
        lines = block.text.splitlines()
        why = not_run_reason(block)
        for node in tree.body:
            if why and not isinstance(node, ast.Import | ast.ImportFrom):
                continue  # compiled above by ast.parse; its names stay unchecked
            source = "\n".join(lines[node.lineno - 1 : node.end_lineno])
            try:
                run_statement(source, namespace)
            except Exception as exc:
                raise AssertionError(f"{doc}:{block.line + node.lineno}: {source!r} raised {exc!r}") from exc


def test_every_doc_is_read_and_every_table_entry_is_used():
    assert "README.md" in ALL and len(COMMANDS) > 50
    used = {c.command for c in COMMANDS if not c.synopsis}
    assert used <= RUN_COMMANDS | set(PARSE_ONLY)
    for (doc, line), _ in NOT_RUN.items():
        assert any(line in b.text for b in python_blocks(doc)), f"NOT_RUN entry {doc}: {line!r} is stale"
    assert (ROOT / "docs").is_dir()
