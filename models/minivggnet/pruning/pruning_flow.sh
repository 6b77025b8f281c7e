#!/usr/bin/env bash
# The tutorial's pruning_flow.sh: tools/prune_minivggnet.sh, every option passed on.
exec "$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)/tools/prune_minivggnet.sh" "$@"
