#!/usr/bin/env bash
# vnet: set up a fresh Debian machine (root, Python 3.11) and run the demo or the test suite.
#   ./run.sh demo    install what is missing, then build the demo lab and print its report
#   ./run.sh test    install what is missing, then run the whole test suite (the integration
#                    tests twice: the second time every node on the kernel tier)
set -euo pipefail
cd "$(dirname "$0")"

# python3-rich: vnetctl draws its tables with rich, and the tests run it as an unprivileged user
# with the system python (/usr/bin/python3), which must have it where pip installs elsewhere;
# clang, llvm, libbpf-dev: the eBPF programs (shipped ones built by the pip install below into
# vnet_router/bpf/*.bpf.o, kernel instances users write compiled at load), loaded with libbpf;
# bubblewrap + libseccomp2: vnet-hostd's protocol instances (mount view, seccomp filter)
APT_PACKAGES="iproute2 iputils-ping iperf3 tcpdump util-linux procps ethtool prometheus systemd netsniff-ng build-essential bird2 python3-rich python3-venv clang llvm libbpf-dev bubblewrap libseccomp2"

setup() {
    if [ "$(id -u)" != 0 ]; then
        echo "run.sh: needs root (network namespaces, veth, TAP)" >&2
        exit 1
    fi
    missing=""
    for p in $APT_PACKAGES; do
        dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"
    done
    if [ -n "$missing" ]; then
        echo "== installing Debian packages:$missing"
        apt-get update -q
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q $missing
    fi
    echo "== installing vnet and its Python dependencies"
    python3 -m pip install -q --disable-pip-version-check -e '.[test,bench]'
}

case "${1:-}" in
    demo)
        setup
        shift
        exec python3 -m vnet_router.lab.cli demo "$@"
        ;;
    test)
        setup
        shift
        echo "== layering (import-linter contracts in pyproject.toml)"
        lint-imports --no-cache
        if [ "$#" -gt 0 ]; then
            exec python3 -m pytest tests "$@"
        fi
        python3 -m pytest tests --durations=25
        echo "== the integration tests again, every node on the kernel tier (VNET_DATAPATH=kernel;" \
             "tests marked one_tier choose their datapaths themselves)"
        exec env VNET_DATAPATH=kernel python3 -m pytest tests/integration -m "not one_tier" \
            --durations=15
        ;;
    *)
        echo "usage: ./run.sh demo | test [pytest args]" >&2
        exit 2
        ;;
esac
