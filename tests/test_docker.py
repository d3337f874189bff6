"""The Dockerfile, checked against the repository without a Docker engine.

The image is never built here (no engine in CI), so these tests read the
Dockerfile, .dockerignore, .ci/run, tools/setup_env.sh, build_op.py and the
installed TensorFlow's metadata, and check what a build would depend on: the
base image (CUDA devel, the CUDA major of TensorFlow's wheels), the build
context, the install being CI's own script with the CUDA kernel required, and
the commands of the CMD, the header and the README naming real files.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import re
import shlex

import pytest
from packaging.specifiers import SpecifierSet

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCKERFILE = os.path.join(ROOT, "Dockerfile")
DOCKERIGNORE = os.path.join(ROOT, ".dockerignore")
SOURCE_DIRS = ("recon_tf", "bfm", "tools", "experiments")
ARTEFACT_SUFFIXES = (".pyc", ".so", ".o", ".tmp")
ENTRY_POINTS = ("tools/reconstruct.py", "experiments/train_coarse.py",
                "experiments/train_fine.py")
REQUIRE_CUDA = "RECON_TF_REQUIRE_CUDA"


def _read(path: str) -> str:
    with open(os.path.join(ROOT, path)) as f:
        return f.read()


# ---------------------------------------------------------------- parsing helpers
def parse_dockerfile(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs: continuations joined, comment lines dropped."""
    instructions, current = [], ""
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#") or not stripped:
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1].rstrip() + " "
            continue
        current += stripped
        keyword, _, args = current.strip().partition(" ")
        instructions.append((keyword.upper(), args.strip()))
        current = ""
    return instructions


def commented_commands(text: str, prefix: str) -> list[str]:
    """Commands starting with ``prefix`` in ``#`` comment lines (continuations joined)."""
    commands, current = [], ""
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped.startswith("#"):
            current = ""
            continue
        body = stripped[1:].strip()
        if body.endswith("\\"):
            current += body[:-1].rstrip() + " "
            continue
        current += body
        if current.startswith(prefix):
            commands.append(" ".join(current.split()))
        current = ""
    return commands


def text_commands(text: str, needle: str) -> list[str]:
    """Lines of ``text`` (continuations joined) that contain ``needle``."""
    joined = re.sub(r"\\\n\s*", " ", text)
    return [" ".join(line.split()) for line in joined.splitlines() if needle in line]


def shell_segments(command: str) -> list[list[str]]:
    """A shell command line split into simple commands (at ``&&``, ``||``, ``;``)."""
    segments, current = [], []
    lexer = shlex.shlex(command, posix=True, punctuation_chars=";&|")
    lexer.whitespace_split = True
    for token in lexer:
        if token in ("&&", "||", ";", "|", "&"):
            if current:
                segments.append(current)
            current = []
        else:
            current.append(token)
    if current:
        segments.append(current)
    return segments


def split_assignments(segment: list[str]) -> tuple[dict[str, str], list[str]]:
    """({NAME: value} of leading ``NAME=value`` words, the command after them)."""
    env, i = {}, 0
    while i < len(segment) and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", segment[i]):
        name, _, value = segment[i].partition("=")
        env[name] = value
        i += 1
    return env, segment[i:]


def key_values(args: str) -> dict[str, str]:
    """``ENV``/``ARG`` arguments: ``A=1 B=2`` or the legacy ``A 1``; ``ARG A`` gives ''."""
    tokens = shlex.split(args)
    if tokens and "=" not in tokens[0]:
        return {tokens[0]: " ".join(tokens[1:])}
    return dict(t.partition("=")[::2] for t in tokens)


def expand(value: str, env: dict[str, str]) -> str:
    """``$NAME`` / ``${NAME}`` substituted from ``env`` (unknown names kept)."""
    return re.sub(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?",
                  lambda m: env.get(m.group(1), m.group(0)), value)


def _pattern_regex(pattern: str) -> re.Pattern:
    out, i = "", 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**", i):
            i += 2
            if pattern.startswith("/", i):
                out += "(?:.*/)?"
                i += 1
            else:
                out += ".*"
            continue
        if c == "*":
            out += "[^/]*"
        elif c == "?":
            out += "[^/]"
        elif c == "[" and "]" in pattern[i + 1:]:
            end = pattern.index("]", i + 1)
            body = pattern[i + 1:end]
            out += "[" + ("^" + body[1:] if body.startswith("!") else body) + "]"
            i = end
        else:
            out += re.escape(c)
        i += 1
    return re.compile(out)


class DockerIgnore:
    """``.dockerignore`` rules as Docker applies them: the last matching rule wins,
    ``!`` re-includes, and a rule matching a folder leaves out all beneath it."""

    def __init__(self, text: str):
        self.rules = []
        for line in text.splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            negate = line.startswith("!")
            pattern = os.path.normpath(line[1:].strip() if negate else line).lstrip("/")
            self.rules.append((negate, _pattern_regex(pattern)))

    def excluded(self, path: str) -> bool:
        """Whether ``path`` (relative to the context, ``/``-separated) is left out."""
        parts = path.strip("/").split("/")
        prefixes = ["/".join(parts[:k]) for k in range(1, len(parts) + 1)]
        result = False
        for negate, regex in self.rules:
            if any(regex.fullmatch(p) for p in prefixes):
                result = not negate
        return result


# ---------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def dockerfile() -> str:
    return _read("Dockerfile")


@pytest.fixture(scope="module")
def instructions(dockerfile) -> list[tuple[str, str]]:
    return parse_dockerfile(dockerfile)


@pytest.fixture(scope="module")
def ignore() -> DockerIgnore:
    assert os.path.exists(DOCKERIGNORE), ".dockerignore is missing"
    return DockerIgnore(_read(".dockerignore"))


def _runs_with_env(instructions) -> list[tuple[dict[str, str], list[list[str]]]]:
    """Each RUN of the final stage: (ENV/ARG values in force, its simple commands)."""
    env: dict[str, str] = {}
    runs = []
    for keyword, args in instructions:
        if keyword == "FROM":
            env, runs = {}, []
        elif keyword in ("ENV", "ARG"):
            env.update({k: expand(v, env) for k, v in key_values(args).items()})
        elif keyword == "RUN":
            runs.append((dict(env), shell_segments(args)))
    return runs


def _ci_install_commands() -> list[list[str]]:
    """.ci/run's commands other than ``set``/``cd`` and the test run: the install."""
    commands = []
    for line in _read(".ci/run").splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        for segment in shell_segments(line):
            _, command = split_assignments(segment)
            if not command or command[0] in ("set", "cd") or "pytest" in command:
                continue
            commands.append(command)
    return commands


def _tensorflow_requirements() -> list[str]:
    requires = importlib.metadata.requires("tensorflow") or []
    return [r for r in requires if "and-cuda" in r]


# ---------------------------------------------------------------- the helpers themselves
def test_dockerignore_matcher_follows_docker_rules():
    rules = DockerIgnore("# c\n.venv\n**/*.so\nbuild\n**/__pycache__\nkeep/*\n!keep/me.so\n")
    assert rules.excluded(".venv/bin/python")
    assert rules.excluded("a.so") and rules.excluded("recon_tf/render/_op.so")
    assert rules.excluded("build/lib/x.py") and not rules.excluded("recon_tf/build/x.py")
    assert rules.excluded("recon_tf/__pycache__/x.pyc")
    assert rules.excluded("keep/other.txt") and not rules.excluded("keep/me.so")
    assert not rules.excluded("recon_tf/render/build_op.py")
    assert not rules.excluded(".venvx")


def test_parsers_join_continuations_and_drop_comments():
    text = "# docker run a \\\n#   b\nFROM x:1\nRUN A=1 bash s.sh \\\n    # inner\n  && echo ok\n"
    assert parse_dockerfile(text) == [("FROM", "x:1"), ("RUN", "A=1 bash s.sh && echo ok")]
    assert commented_commands(text, "docker run") == ["docker run a b"]
    env, command = split_assignments(shell_segments("A=1 B=x bash s.sh && echo ok")[0])
    assert env == {"A": "1", "B": "x"} and command == ["bash", "s.sh"]


# ---------------------------------------------------------------- base image and Python
def test_base_image_is_cuda_devel_matching_tensorflow(instructions):
    froms = [args.split()[0] for keyword, args in instructions if keyword == "FROM"]
    assert froms, "no FROM"
    match = re.fullmatch(r"nvidia/cuda:(\d+)\.(\d+)(?:\.\d+)?-(?:cudnn\d*-)?devel-ubuntu[\d.]+",
                         froms[-1])
    assert match, f"{froms[-1]} is not a CUDA *devel* image (no nvcc to build the kernel)"
    cuda = (int(match.group(1)), int(match.group(2)))
    requirements = _tensorflow_requirements()
    runtime = [r for r in requirements if r.startswith("nvidia-cuda-runtime-cu")]
    assert runtime, f"tensorflow[and-cuda] names no CUDA runtime: {requirements}"
    major = int(re.match(r"nvidia-cuda-runtime-cu(\d+)", runtime[0]).group(1))
    assert cuda[0] == major, f"base CUDA {cuda} but TensorFlow's wheels use CUDA {major}"
    least = re.search(r">=\s*(\d+)\.(\d+)", runtime[0])
    if least:
        assert cuda >= (int(least.group(1)), int(least.group(2))), (froms[-1], runtime[0])


def test_python_suits_tensorflow_and_setup(instructions):
    runs = _runs_with_env(instructions)
    pythons = set()
    for env, segments in runs:
        for segment in segments:
            assignments, command = split_assignments(segment)
            if command and command[-1].endswith("setup_env.sh") and "PYTHON" in assignments:
                pythons.add(expand(assignments["PYTHON"], env))
    assert len(pythons) == 1, f"the setup RUN must pick one PYTHON, found {pythons}"
    python = pythons.pop()
    version = re.fullmatch(r"python(\d+\.\d+)", python)
    assert version, python
    installed = {expand(w, env) for env, segs in runs for s in segs
                 if s[:2] == ["apt-get", "install"] for w in s}
    assert python in installed and f"{python}-venv" in installed, (
        f"{python} (and its venv module) is not apt-installed")
    tf_spec = importlib.metadata.metadata("tensorflow")["Requires-Python"]
    setup_spec = re.search(r"python_requires=\"([^\"]+)\"", _read("setup.py")).group(1)
    for spec in (tf_spec, setup_spec):
        assert version.group(1) in SpecifierSet(spec), f"Python {version.group(1)} vs {spec}"


# ---------------------------------------------------------------- build context
def _copied_sources(instructions) -> list[str]:
    sources = []
    for keyword, args in instructions:
        if keyword not in ("COPY", "ADD"):
            continue
        words = json.loads(args) if args.startswith("[") else shlex.split(args)
        if any(w.startswith("--from") for w in words):
            continue
        words = [w for w in words if not w.startswith("--")]
        assert len(words) >= 2, f"{keyword} {args}"
        sources += words[:-1]
    return sources


def test_copy_sources_exist_and_are_in_the_context(instructions, ignore):
    sources = _copied_sources(instructions)
    assert sources, "nothing is copied into the image"
    for source in sources:
        path = os.path.normpath(os.path.join(ROOT, source))
        assert path.startswith(ROOT) and os.path.exists(path), f"COPY source {source} missing"
        rel = os.path.relpath(path, ROOT)
        if rel != ".":
            assert not ignore.excluded(rel), f"COPY source {source} is in .dockerignore"


def test_build_inputs_are_copied_and_not_ignored(instructions, ignore):
    roots = [os.path.relpath(os.path.normpath(os.path.join(ROOT, s)), ROOT)
             for s in _copied_sources(instructions)]
    needed = ["setup.py", "pyproject.toml", "tools/setup_env.sh", *ENTRY_POINTS]
    for folder in SOURCE_DIRS:
        for base, dirs, files in os.walk(os.path.join(ROOT, folder)):
            dirs[:] = [d for d in dirs if d != "__pycache__" and not d.endswith(".egg-info")]
            needed += [os.path.relpath(os.path.join(base, f), ROOT) for f in files
                       if not f.endswith(ARTEFACT_SUFFIXES)]
    assert "recon_tf/render/kernels/rasterize_op_gpu.cu.cc" in needed
    for rel in needed:
        assert any(r == "." or rel == r or rel.startswith(r + "/") for r in roots), (
            f"{rel} is not copied into the image")
        assert not ignore.excluded(rel), f"{rel} is left out by .dockerignore"


def test_dockerignore_leaves_out_environment_and_artefacts(ignore):
    for rel in (".venv/bin/python", ".git/HEAD", "outputs/demo/mesh_coarse.obj",
                "runs/coarse/ckpt-1.index", "recon_tf/render/_rasterize_op.so",
                "recon_tf/render/_rasterize_op_gpu.so", "recon_tf/__pycache__/fine.pyc",
                "build/lib/recon_tf/fine.py", "recon_tf.egg-info/PKG-INFO",
                ".pytest_cache/v/cache/nodeids", ".ruff_cache/CACHEDIR.TAG"):
        assert ignore.excluded(rel), f".dockerignore keeps {rel} in the context"


def test_dockerignore_covers_gitignore(ignore):
    """Whatever git ignores (environments, outputs, build artefacts) stays out too."""
    for line in _read(".gitignore").splitlines():
        line = line.strip()
        if not line or line.startswith(("#", "!")):
            continue
        sample = line.strip("/").replace("**", "x").replace("*", "x")
        samples = [sample + "/f" if line.endswith("/") else sample]
        if not line.startswith("/") and "/" not in line.rstrip("/"):
            samples.append("recon_tf/" + samples[0])  # unanchored: any depth
        for rel in samples:
            assert ignore.excluded(rel), f".gitignore's {line!r}: {rel} is not in .dockerignore"


# ---------------------------------------------------------------- the install is CI's
def test_build_runs_the_ci_install_script(instructions):
    ci = _ci_install_commands()
    assert ci, ".ci/run has no install command"
    scripts = [w for command in ci for w in command if w.endswith(".sh")]
    assert scripts and all(os.path.exists(os.path.join(ROOT, s)) for s in scripts), scripts
    run_commands = [split_assignments(s)[1] for _, segs in _runs_with_env(instructions)
                    for s in segs]
    for command in ci:
        assert command in run_commands, f"no RUN runs .ci/run's {' '.join(command)!r}"
    setup = _read(scripts[0])
    assert re.search(r"pip install .*--no-build-isolation -e", setup), (
        f"{scripts[0]} no longer builds the package")
    for _, segs in _runs_with_env(instructions):
        for segment in segs:
            _, command = split_assignments(segment)
            assert not ("pip" in command and "-e" in command), (
                "the Dockerfile installs the package itself; it must use "
                f"{scripts[0]}: {' '.join(command)}")


def test_tensorflow_cuda_pin_matches_setup(dockerfile):
    setup_pin = re.search(r"tensorflow==([0-9.*]+)", _read("tools/setup_env.sh"))
    cuda_pin = re.search(r"tensorflow\[and-cuda\]==([0-9.*]+)", dockerfile)
    assert setup_pin, "tools/setup_env.sh pins no tensorflow"
    assert cuda_pin, "the Dockerfile installs no tensorflow[and-cuda]"
    assert cuda_pin.group(1) == setup_pin.group(1), (
        f"tensorflow[and-cuda]=={cuda_pin.group(1)} but setup_env.sh pins {setup_pin.group(1)}")


def test_cuda_kernel_is_required_for_the_build(instructions, monkeypatch):
    spec = importlib.util.spec_from_file_location(
        "build_op_for_docker_test", os.path.join(ROOT, "recon_tf", "render", "build_op.py"))
    build_op = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build_op)
    source = _read("recon_tf/render/build_op.py")
    assert f'_env_flag("{REQUIRE_CUDA}")' in source, f"build_op.py ignores {REQUIRE_CUDA}"
    setup_runs = []
    for env, segments in _runs_with_env(instructions):
        for segment in segments:
            assignments, command = split_assignments(segment)
            if command and command[-1].endswith("setup_env.sh"):
                setup_runs.append({**env, **assignments})
    assert setup_runs, "no RUN runs tools/setup_env.sh"
    for env in setup_runs:
        assert REQUIRE_CUDA in env, f"{REQUIRE_CUDA} is not set for the build"
        monkeypatch.setenv(REQUIRE_CUDA, env[REQUIRE_CUDA])
        assert build_op._env_flag(REQUIRE_CUDA), f"{REQUIRE_CUDA}={env[REQUIRE_CUDA]} is off"


# ---------------------------------------------------------------- commands name real files
def _scripts(words: list[str]) -> list[str]:
    return [w for w in words if w.endswith(".py")]


def test_cmd_runs_reconstruct_with_the_venv_python(instructions):
    cmds = [args for keyword, args in instructions if keyword == "CMD"]
    assert cmds, "no CMD"
    words = json.loads(cmds[-1]) if cmds[-1].startswith("[") else shlex.split(cmds[-1])
    assert _scripts(words) == ["tools/reconstruct.py"], words
    assert all(os.path.exists(os.path.join(ROOT, s)) for s in _scripts(words))
    workdir = [args for keyword, args in instructions if keyword == "WORKDIR"][-1]
    env: dict[str, str] = {}
    for keyword, args in instructions:
        if keyword == "ENV":
            env.update(key_values(args))
    assert words[0] == "python" and f"{workdir}/.venv/bin" in env.get("PATH", "").split(":"), (
        "CMD's python is not the image's .venv (tools/setup_env.sh makes it in WORKDIR)")


def test_header_shows_build_and_gpu_runs_of_every_entry_point(dockerfile):
    builds = commented_commands(dockerfile, "docker build")
    assert builds and " -t " in builds[0], "header lacks `docker build -t <name> .`"
    tag = builds[0].split(" -t ")[1].split()[0]
    runs = commented_commands(dockerfile, "docker run")
    named = set()
    for run in runs:
        words = shlex.split(run)
        assert any(words[i:i + 2] == ["--gpus", "all"] for i in range(len(words))), run
        assert tag in words, f"runs another image than {tag}: {run}"
        assets = [w.split("=", 1)[1] for w in words if w.startswith("RECON_TF_ASSETS=")]
        assert assets, f"RECON_TF_ASSETS not set: {run}"
        mounts = [words[i + 1].split(":")[1] for i, w in enumerate(words) if w == "-v"]
        assert assets[0] in mounts, f"assets not mounted at {assets[0]}: {run}"
        for script in _scripts(words[words.index(tag) + 1:]):
            assert os.path.exists(os.path.join(ROOT, script)), f"{script} does not exist"
            named.add(script)
    assert set(ENTRY_POINTS) <= named, f"header lacks docker runs of {set(ENTRY_POINTS) - named}"


def test_readme_docker_commands_name_existing_files():
    runs = text_commands(_read("README.md"), "docker run")
    if not runs:
        pytest.skip("README has no `docker run` command")
    for run in runs:
        for script in _scripts(run.replace("`", " ").split()):
            assert os.path.exists(os.path.join(ROOT, script)), f"README: {script} missing"
