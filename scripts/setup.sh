# Sourced by run.sh and test.sh: create .venv and install trainrun (editable) with its test tools, once.
# torch and torchvision are pinned to the releases this project's machines hold locally; any torch>=2.4 works.
if [ ! -x .venv/bin/trainrun ] || [ pyproject.toml -nt .venv/.installed ]; then
  python3 -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
  .venv/bin/python -m pip install -q -e ".[test]"
  .venv/bin/trainrun --help > /dev/null  # fails loudly if the install did not work
  touch .venv/.installed
fi
# tests/test_postgres.py starts a real PostgreSQL server: Debian's package, installed where this can (root, apt)
if ! command -v pg_ctl > /dev/null && ! ls /usr/lib/postgresql/*/bin/pg_ctl > /dev/null 2>&1 \
   && command -v apt-get > /dev/null && [ "$(id -u)" = 0 ]; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql > /dev/null) \
    || echo "setup: could not install postgresql; tests/test_postgres.py will be skipped" >&2
fi
