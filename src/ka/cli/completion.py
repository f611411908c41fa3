"""``ka completion bash|zsh|fish``: a shell completion script, generated from the ka command's own
argument parser, so every command and option any module registers is in it.

Why generated here and not by argcomplete or shtab: argcomplete runs Python (and imports ka) on
every Tab press; shtab would be one more dependency for what is a walk over argparse's tree. The
script is static and fast, and cannot fall behind the parser: a test compares the two.

What completes: commands, options (with their help in zsh and fish), the values of options
with fixed choices, ``--state`` names, process ids for ``--pid``, network namespaces for
``--netns``, files for options that take one, and after ``ka listen ... --`` a command line
(bash and zsh).
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterator
from typing import NamedTuple

from .. import live

EXAMPLES: tuple[str, ...] = (
    "ka completion bash > /etc/bash_completion.d/ka  # Tab completion for bash (zsh, fish alike)",
)

SHELLS = ("bash", "zsh", "fish")
# An action's ``ka_complete`` attribute (set by a command module) or these guesses by dest/metavar.
PIDS, FILES, NETNS, COMMAND_LINE = "pid", "file", "netns", "command"
_STATE_WORDS = (*sorted(live.STATE_GROUPS), *live.TCP_STATES.values())


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], json_parent: argparse.ArgumentParser
) -> None:
    completion = sub.add_parser(
        "completion",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        help="print a shell completion script (bash, zsh, fish)",
        description="Print a Tab-completion script for the ka command, generated from its own\n"
        "options. Install it where your shell looks, or source it from your shell's rc file.",
        epilog="examples:\n"
        "  ka completion bash | sudo tee /usr/share/bash-completion/completions/ka\n"
        '  ka completion zsh > "${fpath[1]}/_ka"          # then restart zsh\n'
        "  ka completion fish > ~/.config/fish/completions/ka.fish\n"
        "  source <(ka completion bash)                    # this shell only",
    )
    completion.add_argument("shell", choices=SHELLS, help="the shell to write the script for")
    completion.set_defaults(func=run)


class Option(NamedTuple):
    """One option of a command, as the scripts need it."""

    flags: tuple[str, ...]
    help: str
    takes_value: bool
    values: tuple[str, ...]  # fixed words, or ()
    kind: str | None  # PIDS, FILES, NETNS or None


class Command(NamedTuple):
    name: str
    help: str
    options: tuple[Option, ...]
    positionals: tuple[str, ...]  # fixed words of its first positional argument, or ()
    runs_command: bool  # takes ``-- COMMAND ...`` (ka listen)


def _kind(action: argparse.Action) -> str | None:
    given = getattr(action, "ka_complete", None)
    if isinstance(given, str):
        return given
    metavar = str(action.metavar or "").upper()
    if action.dest == "pid" or metavar == "PID":
        return PIDS
    if action.dest == "netns":
        return NETNS
    if metavar in ("FILE", "PATH", "DIR") or metavar.endswith(("FILE", ".JSON")):
        return FILES
    return None


def _option(action: argparse.Action) -> Option:
    takes_value = action.nargs != 0
    given = getattr(action, "ka_complete", None)
    if isinstance(given, tuple):
        values: tuple[str, ...] = given
    elif action.choices is not None:
        values = tuple(str(c) for c in action.choices)
    elif action.dest == "state":
        values = _STATE_WORDS
    else:
        values = ()
    text = "" if action.help in (None, argparse.SUPPRESS) else str(action.help)
    first = re.split(r"(?<=[a-z)])[;:(]\s|\. ", text, maxsplit=1)[0]
    return Option(tuple(action.option_strings), first.strip(), takes_value, values, _kind(action))


def _options(parser: argparse.ArgumentParser) -> tuple[Option, ...]:
    return tuple(
        _option(action)
        for action in parser._actions
        if action.option_strings and action.help != argparse.SUPPRESS
    )


def _subparsers(parser: argparse.ArgumentParser) -> argparse._SubParsersAction[argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    raise ValueError("the ka parser has no subcommands")


def commands(root: argparse.ArgumentParser) -> list[Command]:
    """Every command of the parser, in order, with its options."""
    sub = _subparsers(root)
    helps = {choice.dest: str(choice.help or "") for choice in sub._choices_actions}
    result = []
    for name, parser in sub.choices.items():
        positionals = [a for a in parser._actions if not a.option_strings and a.help != argparse.SUPPRESS]
        words = (
            tuple(str(c) for c in positionals[0].choices) if positionals and positionals[0].choices else ()
        )
        runs = any(a.nargs == argparse.REMAINDER for a in parser._actions)
        result.append(Command(name, helps.get(name, ""), _options(parser), words, runs))
    return result


def top_options(root: argparse.ArgumentParser) -> tuple[Option, ...]:
    return _options(root)


# -- bash --------------------------------------------------------------------------------------


def _bash_values(option: Option) -> str:
    if option.values:
        return f'COMPREPLY=($(compgen -W "{" ".join(option.values)}" -- "$cur"))'
    if option.kind == PIDS:
        return 'COMPREPLY=($(compgen -W "$(cd /proc 2>/dev/null && ls -d [0-9]* 2>/dev/null)" -- "$cur"))'
    if option.kind == NETNS:
        return 'COMPREPLY=($(compgen -W "$(ls /run/netns 2>/dev/null)" -- "$cur"))'
    if option.kind == FILES:
        return 'COMPREPLY=($(compgen -f -- "$cur"))'
    return "COMPREPLY=()"


def _bash_value_cases(options: tuple[Option, ...], indent: str) -> Iterator[str]:
    for option in options:
        if option.takes_value:
            yield f"{indent}{'|'.join(option.flags)}) {_bash_values(option)}; return 0 ;;"


def bash(root: argparse.ArgumentParser) -> str:
    cmds = commands(root)
    top = top_options(root)
    top_valued = "|".join(f for o in top if o.takes_value for f in o.flags) or "--no-such-option"
    lines = [
        "# bash completion for ka, generated by 'ka completion bash'",
        "_ka() {",
        '    local cur="${COMP_WORDS[COMP_CWORD]}" prev="${COMP_WORDS[COMP_CWORD-1]}"',
        '    local i command="" at=0',
        "    for ((i = 1; i < COMP_CWORD; i++)); do",
        '        case "${COMP_WORDS[i]}" in',
        f"            {top_valued}) ((i++)) ;;",
        "            -*) ;;",
        '            *) command="${COMP_WORDS[i]}"; at=$i; break ;;',
        "        esac",
        "    done",
        '    if [[ -z "$command" ]]; then',
        '        case "$prev" in',
        *_bash_value_cases(top, "            "),
        "        esac",
        '        if [[ "$cur" == -* ]]; then',
        f'            COMPREPLY=($(compgen -W "{" ".join(f for o in top for f in o.flags)}" -- "$cur"))',
        "        else",
        f'            COMPREPLY=($(compgen -W "{" ".join(c.name for c in cmds)}" -- "$cur"))',
        "        fi",
        "        return 0",
        "    fi",
        '    case "$command" in',
    ]
    for cmd in cmds:
        lines.append(f"        {cmd.name})")
        if cmd.runs_command:
            lines += [
                "            for ((i = at + 1; i < COMP_CWORD; i++)); do",
                '                if [[ "${COMP_WORDS[i]}" == -- ]]; then',
                "                    if ((i + 1 == COMP_CWORD)); then",
                '                        COMPREPLY=($(compgen -c -- "$cur"))',
                "                    else",
                '                        COMPREPLY=($(compgen -f -- "$cur"))',
                "                    fi",
                "                    return 0",
                "                fi",
                "            done",
            ]
        lines.append('            case "$prev" in')
        lines += list(_bash_value_cases(cmd.options, "                "))
        lines.append("            esac")
        flags = " ".join(f for o in cmd.options for f in o.flags)
        if cmd.positionals:
            lines += [
                '            if [[ "$cur" == -* ]]; then',
                f'                COMPREPLY=($(compgen -W "{flags}" -- "$cur"))',
                "            else",
                f'                COMPREPLY=($(compgen -W "{" ".join(cmd.positionals)}" -- "$cur"))',
                "            fi",
            ]
        else:
            lines.append(f'            COMPREPLY=($(compgen -W "{flags}" -- "$cur"))')
        lines.append("            ;;")
    lines += ["    esac", "    return 0", "}", "complete -F _ka ka", ""]
    return "\n".join(lines)


# -- zsh ---------------------------------------------------------------------------------------


def _zsh_quote(text: str) -> str:
    """Text for inside single quotes in an _arguments spec: no quote, bracket or colon breaks it."""
    return text.replace("'", "'\\''").replace("[", "(").replace("]", ")").replace(":", " -")


def _zsh_action(option: Option) -> str:
    if option.values:
        return f"({' '.join(option.values)})"
    return {PIDS: "_pids", NETNS: "_files -W /run/netns", FILES: "_files"}.get(option.kind or "", " ")


def _zsh_specs(options: tuple[Option, ...]) -> Iterator[str]:
    for option in options:
        help_text = _zsh_quote(option.help)
        value = (
            f":{_zsh_quote(option.flags[-1].lstrip('-'))}:{_zsh_action(option)}" if option.takes_value else ""
        )
        exclusive = "(- *)" if option.flags in (("-h", "--help"), ("--version",)) else ""
        if len(option.flags) > 1:
            group = exclusive or "(" + " ".join(option.flags) + ")"
            yield f"'{group}'{{{','.join(option.flags)}}}'[{help_text}]{value}'"
        else:
            yield f"'{exclusive}{option.flags[0]}[{help_text}]{value}'"


def zsh(root: argparse.ArgumentParser) -> str:
    cmds = commands(root)
    lines = [
        "#compdef ka",
        "# zsh completion for ka, generated by 'ka completion zsh'",
        "_ka() {",
        '    local curcontext="$curcontext" state line ret=1',
        "    local -a commands",
        "    commands=(",
        *(f"        '{_zsh_quote(c.name)}:{_zsh_quote(c.help)}'" for c in cmds),
        "    )",
        "    _arguments -C \\",
        *(f"        {spec} \\" for spec in _zsh_specs(top_options(root))),
        "        '1: :->command' \\",
        "        '*:: :->arguments' && ret=0",
        "    case $state in",
        "        command) _describe -t commands 'ka command' commands && ret=0 ;;",
        "        arguments)",
        "            curcontext=${curcontext%:*:*}:ka-$words[1]:",
        "            case $words[1] in",
    ]
    for cmd in cmds:
        specs = list(_zsh_specs(cmd.options))
        if cmd.positionals:
            specs.append(f"'1:{cmd.name}:({' '.join(cmd.positionals)})'")
        lines.append(f"                {cmd.name})")
        if cmd.runs_command:
            lines += [
                "                    local dashes=${words[(i)--]}",
                "                    if (( CURRENT > dashes )); then",
                "                        shift $dashes words; (( CURRENT -= dashes )); _normal && ret=0",
                "                        return ret",
                "                    fi",
            ]
            specs.append("'*: :_default'")
        lines.append("                    _arguments \\")
        lines += [f"                        {spec} \\" for spec in specs]
        lines[-1] = lines[-1][: -len(" \\")] + " && ret=0"
        lines.append("                    ;;")
    lines += [
        "            esac",
        "            ;;",
        "    esac",
        "    return ret",
        "}",
        'if [[ "${funcstack[1]}" == _ka ]]; then _ka "$@"; else compdef _ka ka; fi',
        "",
    ]
    return "\n".join(lines)


# -- fish --------------------------------------------------------------------------------------


def _fish_quote(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _fish_option(option: Option, condition: str) -> str:
    parts = ["complete -c ka", f"-n {_fish_quote(condition)}"]
    for flag in option.flags:
        parts.append(f"-l {flag[2:]}" if flag.startswith("--") else f"-s {flag[1:]}")
    if option.help:
        parts.append(f"-d {_fish_quote(option.help)}")
    if option.takes_value:
        if option.values:
            parts.append(f"-x -a {_fish_quote(' '.join(option.values))}")
        elif option.kind == PIDS:
            parts.append("-x -a '(__fish_complete_pids)'")
        elif option.kind == NETNS:
            parts.append("-x -a '(ls /run/netns 2>/dev/null)'")
        elif option.kind == FILES:
            parts.append("-r -F")
        else:
            parts.append("-x")
    return " ".join(parts)


def fish(root: argparse.ArgumentParser) -> str:
    cmds = commands(root)
    names = " ".join(c.name for c in cmds)
    lines = [
        "# fish completion for ka, generated by 'ka completion fish'",
        "complete -c ka -f",
        *(_fish_option(o, "__fish_use_subcommand") for o in top_options(root)),
        *(f"complete -c ka -n '__fish_use_subcommand' -a {c.name} -d {_fish_quote(c.help)}" for c in cmds),
    ]
    for cmd in cmds:
        condition = f"__fish_seen_subcommand_from {cmd.name}"
        lines += [_fish_option(o, condition) for o in cmd.options]
        if cmd.positionals:
            words = " ".join(cmd.positionals)
            once = f"{condition}; and not __fish_seen_subcommand_from {words}"
            lines.append(f"complete -c ka -n {_fish_quote(once)} -a {_fish_quote(words)}")
    lines.append(f"# commands: {names}")
    return "\n".join(lines) + "\n"


GENERATORS = {"bash": bash, "zsh": zsh, "fish": fish}


def script(shell: str, root: argparse.ArgumentParser) -> str:
    """The completion script for ``shell`` (bash, zsh or fish)."""
    if shell not in GENERATORS:
        raise ValueError(f"no completion for shell {shell!r}: expected one of {', '.join(SHELLS)}")
    return GENERATORS[shell](root)


def run(args: argparse.Namespace) -> int:
    print(script(args.shell, args.root_parser), end="")
    return 0
