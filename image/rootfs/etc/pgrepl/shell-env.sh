# The variables that `pgrepl container` chose for the mode in use (PGDATA, ...), which it writes
# to /run/pgrepl/env, for every shell in the container: bash scripts through BASH_ENV,
# interactive bash through /etc/bash.bashrc, login shells through /etc/profile.d/pgrepl.sh.
if [ -r /run/pgrepl/env ]; then . /run/pgrepl/env; fi
