"""The user documentation stays true to the code: every Markdown file of the repository
(README.md, CONTRIBUTING.md, docs/, the model and dataset cards, pages added later) is
scanned for

* relative links (and their ``#anchors``), which must reach a file and a heading;
* repository paths named in code (`` `run_scripts/demo.sh` ``, ``benco_configs/x.yaml`` in a
  command), which must exist; ``<placeholder>`` and ``*`` parts match any name;
* command lines (``benco-maskclip CMD``, ``python -m imdlbenco_maskclip CMD``, a
  ``run_scripts/*.sh`` or ``benchmarks/*.py`` run), whose ``--flags`` must appear in that
  command's ``--help`` (with the line's ``--model`` and ``--config``), so that a renamed flag
  cannot leave the docs behind; runs of BenCo's stock ``train.py``, ``test.py`` and
  ``test_robust.py``, whose flags must be the script's own or the ``--model``'s; shell
  variables a code block sets (``TINY="--model ..."``) are expanded first;
* flags named in running text (`` `--image_size` ``), which some command, model, benchmark,
  torchrun or BenCo's stock scripts must accept;
* the README, which must link every page of docs/, every model card and the contributors'
  pages, so that each is one link away.
"""
import contextlib
import inspect
import io
import re
import runpy
import shlex
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

import pytest

from imdlbenco_maskclip.cli import COMMANDS, main

ROOT = Path(__file__).resolve().parents[1]
FENCE = re.compile(r"^(```|~~~)[^\n]*\n(.*?)^\1[ \t]*$", re.S | re.M)
INLINE_CODE = re.compile(r"`([^`\n]+)`")
LINK = re.compile(r"!?\[(?:[^\]\[]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE_LINK = re.compile(r"^\s*\[[^\]]+\]:\s*(\S+)", re.M)
HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*\s*$", re.M)
OUR_COMMAND = re.compile(r"(?:benco-maskclip|-m\s+imdlbenco_maskclip)\s+([a-z][a-z-]*)")
SCRIPT_RUN = re.compile(r"((?:run_scripts|benchmarks)/[\w.-]+\.(?:sh|py))")
STOCK_RUN = re.compile(r"(?:^|[\s/])((?:train|test|test_robust)\.py)(?=\s|$)")
ASSIGNMENT = re.compile(r"^([A-Z_][A-Z0-9_]*)=\"([^\"$]*)\"\s*$", re.M)


def markdown_files():
    try:
        listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "*.md"],
                                cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
        return sorted({ROOT / name for name in listed if (ROOT / name).is_file()})
    except (OSError, subprocess.CalledProcessError):  # not a git checkout: every .md outside hidden folders
        return sorted(p for p in ROOT.rglob("*.md") if not any(part.startswith(".") for part in p.relative_to(ROOT).parts))


def top_level_names():
    """Names at the repository's root that the repository holds (not run outputs)."""
    try:
        listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"],
                                cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
        return {name.split("/")[0] for name in listed}
    except (OSError, subprocess.CalledProcessError):
        return {p.name for p in ROOT.iterdir() if not p.name.startswith(".")}


MARKDOWN = markdown_files()
TOP_LEVEL = top_level_names()


def ids(paths):
    return [str(p.relative_to(ROOT)) for p in paths]


def split_code(text):
    """-> (prose with code blocks removed, [code block, ...])."""
    return FENCE.sub("", text), [m.group(2) for m in FENCE.finditer(text)]


def slug(heading):
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading keeps its text
    text = re.sub(r"[^\w\- ]", "", text.lower().replace("`", ""))
    return text.replace(" ", "-")


@lru_cache(maxsize=None)
def anchors(path):
    prose, _ = split_code(path.read_text())
    seen, found = {}, set()
    for heading in HEADING.findall(prose):
        base = slug(heading)
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def exists(pattern, base=ROOT):
    """A path that may hold ``<placeholder>`` or ``*`` parts."""
    pattern = re.sub(r"<[^>/]+>", "*", pattern).rstrip("/")
    if "*" in pattern or "?" in pattern:
        return any(base.glob(pattern))
    return (base / pattern).exists()


@pytest.mark.parametrize("page", MARKDOWN, ids=ids(MARKDOWN))
def test_relative_links_reach_a_file_and_a_heading(page):
    prose, _ = split_code(page.read_text())
    targets = LINK.findall(prose) + REFERENCE_LINK.findall(prose)
    broken = []
    for target in targets:
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(f"{target}: no such file")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            broken.append(f"{target}: no heading #{anchor} in {file.relative_to(ROOT)}")
    assert not broken, f"{page.relative_to(ROOT)}: " + "; ".join(broken)


def named_paths(text):
    """Tokens of code spans and code blocks that name something in the repository: their
    first part is a name at the repository's root."""
    prose, blocks = split_code(text)
    tokens = [token for span in INLINE_CODE.findall(prose) for token in span.split()]
    tokens += [token for block in blocks for token in re.split(r"[\s=\"'(),\[\]]+", block)]
    for token in tokens:
        token = token.strip(".,:;)").split("::")[0]
        if token.startswith("./"):
            token = token[2:]
        first = token.split("/")[0]
        if first in TOP_LEVEL and ("/" in token or "." in first) and "$" not in token:
            yield token


@pytest.mark.parametrize("page", MARKDOWN, ids=ids(MARKDOWN))
def test_named_repository_paths_exist(page):
    missing = sorted({token for token in named_paths(page.read_text()) if not exists(token)})
    assert not missing, f"{page.relative_to(ROOT)} names paths that do not exist: {missing}"


def expand_variables(block):
    """A code block with the values of its own ``NAME="..."`` assignments put in for
    ``$NAME`` and ``${NAME}``."""
    for name, value in ASSIGNMENT.findall(block):
        block = re.sub(r"\$(?:\{%s\}|%s\b)" % (name, name), lambda _: value, block)
    return block


def command_lines(text):
    """Shell lines of code blocks (continuations joined) and code spans that run something."""
    prose, blocks = split_code(text)
    lines = [line for block in blocks for line in expand_variables(block).replace("\\\n", " ").splitlines()]
    lines += INLINE_CODE.findall(prose)
    for line in lines:
        line = line.split(" #")[0]
        for part in re.split(r"&&|\|\||;|\|", line):
            if OUR_COMMAND.search(part) or SCRIPT_RUN.search(part) or STOCK_RUN.search(part):
                yield part.strip()


def words(line):
    try:
        return shlex.split(line)
    except ValueError:  # an unbalanced quote in a prose span
        return line.split()


def long_flags(tokens):
    return [token.split("=")[0] for token in tokens if re.match(r"^--[A-Za-z]", token)]


def option(tokens, name):
    for i, token in enumerate(tokens[:-1]):
        if token == name:
            return tokens[i + 1]
    return None


@lru_cache(maxsize=None)
def help_flags(argv):
    """The long flags that ``--help`` lists for an argv (a command of ours, or a benchmark)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        try:
            if argv[0].endswith(".py"):
                saved, sys.argv = sys.argv, [str(ROOT / argv[0]), "--help"]
                try:
                    runpy.run_path(str(ROOT / argv[0]), run_name="__main__")
                finally:
                    sys.argv = saved
            else:
                main(list(argv) + ["--help"])
        except SystemExit:
            pass
    text = out.getvalue()
    assert "usage:" in text, f"{' '.join(argv)} --help printed no usage:\n{text[-2000:]}"
    return frozenset(re.findall(r"--[A-Za-z][\w-]*", text))


def command_argv(command, tokens):
    """The argv whose ``--help`` lists the flags of this line: the command, and the model
    that the line's ``--model`` or ``--config`` names."""
    argv = [command]
    model, config = option(tokens, "--model"), option(tokens, "--config")
    if model and "$" not in model and "<" not in model:
        argv += ["--model", model]
    if config and exists(config):
        argv += ["--config", config]
    return tuple(argv)


def script_commands(script):
    """The (command, config) runs of a run_scripts/ file, which pass their extra flags on."""
    text = (ROOT / script).read_text()
    commands = set(re.findall(r"(?:-m imdlbenco_maskclip|\blaunch)\s+\"?([a-z][a-z-]*)", text)) & set(COMMANDS)
    config = re.search(r"benco_configs/[\w.-]+\.yaml", text)
    return [(command,) + (("--config", config.group(0)) if config else ()) for command in sorted(commands)]


@lru_cache(maxsize=None)
def stock_script_flags(script, model):
    """The flags that BenCo's stock ``script`` (train.py, test.py, test_robust.py) takes: its
    own, and as it does, the constructor arguments of ``model``."""
    import IMDLBenCo
    from IMDLBenCo.registry import MODELS

    source = (Path(IMDLBenCo.__file__).parent / "training_scripts" / script).read_text()
    flags = set(re.findall(r"add_argument\(\s*['\"](--[A-Za-z][\w-]*)", source))
    if model:
        assert model in MODELS.module_dict, f"{script}: no model {model!r} in BenCo's MODELS"
        flags |= {f"--{name}" for name in inspect.signature(MODELS.get(model).__init__).parameters
                  if name != "self"}
    return frozenset(flags)


def unknown_flags(line):
    tokens = words(line)
    match = OUR_COMMAND.search(line)
    if match:
        command = match.group(1)
        assert command in COMMANDS, f"`{line}`: no command {command!r} (commands: {list(COMMANDS)})"
        after = tokens[next(i for i, t in enumerate(tokens) if t == command) + 1:]
        return [flag for flag in long_flags(after) if flag not in help_flags(command_argv(command, after))]
    if not SCRIPT_RUN.search(line):
        script = STOCK_RUN.search(line).group(1)
        after = tokens[next(i for i, t in enumerate(tokens) if t.split("/")[-1] == script) + 1:]
        model = option(after, "--model")
        accepted = stock_script_flags(script, model if model and "$" not in model else None)
        return [flag for flag in long_flags(after) if flag not in accepted]
    script = SCRIPT_RUN.search(line).group(1)
    assert (ROOT / script).exists(), f"`{line}`: {script} does not exist"
    after = tokens[next(i for i, t in enumerate(tokens) if t.endswith(script)) + 1:]
    flags = long_flags(after)
    if not flags:
        return []
    if script.endswith(".py"):
        accepted = help_flags((script,))
    else:
        runs = script_commands(script)
        accepted = frozenset().union(*(help_flags(run) for run in runs)) if runs else frozenset()
    return [flag for flag in flags if flag not in accepted]


@pytest.mark.parametrize("page", MARKDOWN, ids=ids(MARKDOWN))
def test_command_lines_use_flags_that_their_command_accepts(page):
    wrong = {line: unknown_flags(line) for line in command_lines(page.read_text())}
    wrong = {line: flags for line, flags in wrong.items() if flags}
    assert not wrong, f"{page.relative_to(ROOT)}: flags not in the command's --help: " + "; ".join(
        f"{flags} in `{line}`" for line, flags in wrong.items())


def test_the_check_finds_a_renamed_flag_a_broken_link_and_a_missing_file(tmp_path):
    """The three checks fail on what they are for (a check that cannot fail checks nothing)."""
    assert unknown_flags("benco-maskclip test --checkpoint_path ckpt --test_split sd15") == ["--test_split"]
    assert unknown_flags("benco-maskclip train --model MaskCLIP --model_setting tiny --clip_layer 1") == ["--clip_layer"]
    assert unknown_flags("bash run_scripts/train_maskclip.sh --resume auto --epoch 3") == ["--epoch"]
    assert unknown_flags("torchrun --nnodes=1 ./train.py --model MaskCLIP --model_setting tiny --test_split x") == [
        "--test_split"]
    assert unknown_flags("torchrun test.py --model MaskCLIP --test_data_path t.json") == ["--test_data_path"]
    assert list(command_lines('```\nT="--model MaskCLIP --clip_layer 1"\n$RUN train.py $T --epochs 1\n```\n')) == [
        "$RUN train.py --model MaskCLIP --clip_layer 1 --epochs 1"]
    assert list(named_paths("run `run_scripts/no_such.sh` on `benco_configs/<name>.yaml`")) == [
        "run_scripts/no_such.sh", "benco_configs/<name>.yaml"]
    assert not exists("run_scripts/no_such.sh") and exists("benco_configs/<name>.yaml")
    assert "--test_splits" in every_known_flag() and "--test_split" not in every_known_flag()
    page = tmp_path / "page.md"
    page.write_text("# A heading\n\n[ok](#a-heading) [gone](#another) [file](nothing.md)\n")
    prose, _ = split_code(page.read_text())
    assert LINK.findall(prose) == ["#a-heading", "#another", "nothing.md"]
    assert anchors(page) == {"a-heading"}


def pages_one_link_away():
    """docs/ pages, model cards and the contributors' pages: each is to be linked from the README."""
    return [page for page in MARKDOWN if page.parent == ROOT / "docs" or (
        page.name == "README.md" and "model_zoo" in page.parts) or page.parent == ROOT and page.name in (
        "CONTRIBUTING.md", "ARCHITECTURE.md", "CHANGELOG.md")]


def test_the_readme_links_every_page():
    readme = ROOT / "README.md"
    prose, _ = split_code(readme.read_text())
    linked = {(ROOT / target.partition("#")[0]).resolve() for target in LINK.findall(prose)
              if not re.match(r"^[a-z][a-z0-9+.-]*:", target)}
    pages = pages_one_link_away()
    assert ROOT / "docs" / "faq.md" in pages and ROOT / "CONTRIBUTING.md" in pages
    missing = sorted(str(page.relative_to(ROOT)) for page in pages if page not in linked)
    assert not missing, f"README.md links no page {missing}: add each to its Documentation list"


def test_the_readme_gives_the_test_command_that_ci_runs():
    """`.ci/run` runs the README's test command: the second of the two set-up commands."""
    _, blocks = split_code((ROOT / "README.md").read_text())
    setup = next(block for block in blocks if "pip install" in block).strip().splitlines()
    ci = (ROOT / ".ci" / "run").read_text()
    install, test = setup[1].split(" && ")
    assert test in ci and install.replace("pip install", "python -m pip install --quiet") in ci


def test_the_python_example_gives_what_predict_writes(tmp_path, monkeypatch):
    """docs/python_api.md's snippet, run as written on a checkpoint and a photo at the paths it
    names, gives the mask and P(fake) that `benco-maskclip predict` writes for that photo."""
    import csv

    import numpy as np
    from PIL import Image
    from test_predict import photo, save_checkpoint

    _, blocks = split_code((ROOT / "docs" / "python_api.md").read_text())
    snippet = next(block for block in blocks if "from_checkpoint" in block)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "output_dir_maskclip").mkdir()
    save_checkpoint(tmp_path / "output_dir_maskclip" / "checkpoint-best.pth")
    Image.fromarray(photo(90, 120, 7)).save(tmp_path / "photo.jpg", quality=95)
    namespace = {}
    exec(compile(snippet, "docs/python_api.md", "exec"), namespace)
    mask, p_fake = namespace["mask"], namespace["p_fake"]

    assert main(["predict", "--checkpoint_path", "output_dir_maskclip", "--output_dir", "predicted",
                 "--device", "cpu", "--num_workers", "0", "photo.jpg"]) == 0
    with open(tmp_path / "predicted" / "predictions.csv") as f:
        row = next(csv.DictReader(f))
    written = np.asarray(Image.open(tmp_path / "predicted" / "masks" / "photo.png"), dtype=np.float64)
    assert mask.shape == (90, 120) == written.shape
    assert abs(p_fake - float(row["fake_probability"])) < 1e-5
    assert np.abs(mask * 255 - written).max() <= 0.51  # the PNG rounds to 8 bits
    assert 0.05 < (mask > 0.5).mean() < 0.95  # neither all marked nor none: the comparison has something to see


# torchrun's own flags, which the docs name beside ours.
TORCHRUN_FLAGS = {"--standalone", "--nnodes", "--node_rank", "--nproc_per_node", "--rdzv_backend", "--rdzv_endpoint"}


@lru_cache(maxsize=None)
def every_known_flag():
    """Flags that running text may name: ours (every command, every registered model's), the
    benchmarks', torchrun's, and those of BenCo's stock scripts and templates (from their source)."""
    from IMDLBenCo.registry import MODELS
    import IMDLBenCo

    known = set(TORCHRUN_FLAGS)
    for command in COMMANDS:
        known |= help_flags((command,))
    for model in MODELS.module_dict:
        known |= help_flags(("train", "--model", model))
    for script in sorted((ROOT / "benchmarks").glob("*.py")):
        known |= help_flags((str(script.relative_to(ROOT)),))
    benco = Path(IMDLBenCo.__file__).parent
    for script in [*(benco / "training_scripts").glob("*.py"), *(benco / "statics" / "base").glob("*")]:
        if script.is_file() and script.suffix in (".py", ".sh"):
            known |= set(re.findall(r"(--[A-Za-z][\w-]*)", script.read_text()))
    return known


@pytest.mark.parametrize("page", MARKDOWN, ids=ids(MARKDOWN))
def test_flags_named_in_prose_exist(page):
    """A code span in running text that starts with a flag (`--image_size`, `--dtype bf16`)
    names a flag of one of our commands, of a model, of a benchmark, of torchrun or of BenCo's
    stock scripts."""
    prose, _ = split_code(page.read_text())
    named = {flag for span in INLINE_CODE.findall(prose) if span.startswith("--")
             for token in words(span) for flag in long_flags(token.split("/")) if "*" not in flag}
    unknown = sorted(flag for flag in named if flag not in every_known_flag())
    assert not unknown, f"{page.relative_to(ROOT)} names flags that nothing accepts: {unknown}"
