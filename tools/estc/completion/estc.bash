# SPDX-License-Identifier: Apache-2.0
# shellcheck shell=bash
# Bash completion for estc: subcommands and their options. Both are read
# from the program's own --help (the "Subcommands:" and "Options:" lists),
# so they always match the estc being completed; the few fixed values
# (--key-type, --accept, --cacerts-policy, --block-size) are the ones its
# --help lists, checked by tests/client-interop/test-first-contact.sh.

# The subcommands that `ESTC --help` lists.
_estc_subcommands() {
    "$1" --help 2>/dev/null |
        sed -n '/^Subcommands:/,/^$/s/^  \([a-z][a-z0-9-]*\) .*/\1/p'
}

# The long options that `ESTC SUBCOMMAND --help` lists under "Options:".
_estc_options() {
    "$1" "$2" --help 2>/dev/null |
        sed -n '/^Options:/,/^$/s/^  \(-[a-zA-Z], \)\{0,1\} *\(--[a-z][a-z0-9-]*\).*/\2/p'
}

_estc() {
    local cur prev estc sub
    COMPREPLY=()
    cur=${COMP_WORDS[COMP_CWORD]}
    prev=${COMP_WORDS[COMP_CWORD - 1]}
    estc=${COMP_WORDS[0]}
    if [ "$COMP_CWORD" -eq 1 ]; then
        if [[ $cur == -* ]]; then
            mapfile -t COMPREPLY < <(compgen -W "--help --version" -- "$cur")
        else
            mapfile -t COMPREPLY < <(compgen -W "$(_estc_subcommands "$estc") help" -- "$cur")
        fi
        return 0
    fi
    sub=${COMP_WORDS[1]}
    if [ "$sub" = help ]; then
        [ "$COMP_CWORD" -eq 2 ] &&
            mapfile -t COMPREPLY < <(compgen -W "$(_estc_subcommands "$estc")" -- "$cur")
        return 0
    fi
    case $prev in
    --key-type)
        mapfile -t COMPREPLY < <(compgen -W "p256 p384 rsa2048 rsa3072" -- "$cur")
        return 0 ;;
    --accept)
        mapfile -t COMPREPLY < <(compgen -W "281 287 none" -- "$cur")
        return 0 ;;
    --cacerts-policy)
        mapfile -t COMPREPLY < <(compgen -W "never est est-and-bootstrap global" -- "$cur")
        return 0 ;;
    --block-size)
        mapfile -t COMPREPLY < <(compgen -W "16 32 64 128 256 512 1024" -- "$cur")
        return 0 ;;
    --psa-dir)
        mapfile -t COMPREPLY < <(compgen -d -- "$cur")
        return 0 ;;
    --trust | --implicit-trust | --cert | --key | --out | --state | --ca-bundle | --driver | --csr)
        # A file, or an engine address typed by hand.
        mapfile -t COMPREPLY < <(compgen -f -- "$cur")
        compopt -o filenames 2>/dev/null
        return 0 ;;
    --server | --server-name | --new-key | --new-cert | --ca-out | --subject | --san | \
        --timeout | --retries | --max-wait | --nominal-usage | --max-margin | \
        --retry-spacing | --max-runtime | --jitter | --exec | --exec-timeout)
        return 0 ;;
    esac
    if [[ $cur == -* ]]; then
        mapfile -t COMPREPLY < <(compgen -W "$(_estc_options "$estc" "$sub")" -- "$cur")
    fi
    return 0
}
complete -F _estc estc
