package main

import (
	"io"
	"strings"

	"github.com/urfave/cli/v2"
)

// Shell scripts that ask pbatch itself for completions (urfave/cli's
// --generate-bash-completion protocol), so they never go stale.
const bashCompletion = `# bash completion for pbatch: eval "$(pbatch completion bash)"
_pbatch_complete() {
	local cur="${COMP_WORDS[COMP_CWORD]}" req
	local words=("${COMP_WORDS[@]:0:$COMP_CWORD}")
	if [[ "$cur" == -* ]]; then
		req="${words[*]} ${cur} --generate-bash-completion"
	else
		req="${words[*]} --generate-bash-completion"
	fi
	local IFS=$'\n'
	COMPREPLY=($(compgen -W "$(eval "${req}" 2>/dev/null)" -- "${cur}"))
	return 0
}
complete -o bashdefault -o default -F _pbatch_complete pbatch
`

const zshCompletion = `#compdef pbatch
# zsh completion for pbatch: eval "$(pbatch completion zsh)"
_pbatch() {
	local -a opts
	local cur=${words[-1]}
	if [[ "$cur" == -* ]]; then
		opts=("${(@f)$(${words[@]:0:#words[@]-1} ${cur} --generate-bash-completion 2>/dev/null)}")
	else
		opts=("${(@f)$(${words[@]:0:#words[@]-1} --generate-bash-completion 2>/dev/null)}")
	fi
	if [[ "${opts[1]}" != "" ]]; then
		_describe 'values' opts
	else
		_files
	fi
}
compdef _pbatch pbatch
`

// complete answers a shell's --generate-bash-completion request itself: urfave/cli
// disables completion after "--" and would then run the command (exec's whole
// job) instead, and it panics on a partial flag. Words are what the user typed,
// the last one being the word to complete when it starts with '-'.
func complete(words []string, stdout io.Writer) {
	app := newApp(nil, io.Discard, io.Discard)
	var cmd *cli.Command
	for _, w := range words {
		if w == "--" {
			return // past the flags: PATHs or a command line, left to the shell
		}
		if cmd == nil && !strings.HasPrefix(w, "-") {
			cmd = app.Command(w)
		}
	}
	cur := ""
	if n := len(words); n > 0 && strings.HasPrefix(words[n-1], "-") {
		cur = words[n-1]
	}
	var out []string
	switch {
	case cur != "":
		flags := app.Flags
		if cmd != nil {
			flags = cmd.Flags
		}
		for _, f := range append(flags, cli.HelpFlag) {
			for _, n := range f.Names() {
				name := "--" + n
				if len(n) == 1 {
					name = "-" + n
				}
				if strings.HasPrefix(name, cur) {
					out = append(out, name)
				}
			}
		}
	case cmd == nil:
		for _, c := range app.Commands {
			if !c.Hidden {
				out = append(out, c.Name)
			}
		}
	}
	if len(out) > 0 {
		io.WriteString(stdout, strings.Join(out, "\n")+"\n")
	}
}

func completionCommand(stdout io.Writer) *cli.Command {
	return &cli.Command{
		Name:      "completion",
		Usage:     "print a shell completion script: bash, zsh or fish",
		ArgsUsage: "bash|zsh|fish",
		Description: `EXAMPLES:
   eval "$(pbatch completion bash)"                   # in ~/.bashrc
   eval "$(pbatch completion zsh)"                    # in ~/.zshrc, after compinit
   pbatch completion fish > ~/.config/fish/completions/pbatch.fish`,
		Action: func(c *cli.Context) error {
			switch c.Args().First() {
			case "bash":
				_, err := io.WriteString(stdout, bashCompletion)
				return err
			case "zsh":
				_, err := io.WriteString(stdout, zshCompletion)
				return err
			case "fish":
				s, err := c.App.ToFishCompletion()
				if err != nil {
					return err
				}
				_, err = io.WriteString(stdout, s)
				return err
			case "":
				return usagef("completion", "missing shell: bash, zsh or fish")
			default:
				return usagef("completion", "unknown shell %q: bash, zsh or fish", c.Args().First())
			}
		},
	}
}
