# Sourced by the benches that need etcd: start_etcd_cluster MEMBERS DIR
# starts MEMBERS etcd members on loopback ports 23790-23795 with their data
# in DIR (a real disk: etcd's own fsync per commit), waits until they
# answer, appends their PIDs to the caller's etcd_pids array and sets
# `endpoints` to a TOML list of their client URLs and `endpoint_list` to
# the same comma-separated. The caller's cleanup kills etcd_pids.
# etcd's /health over plain bash (no etcdctl: Debian ships it apart, in
# etcd-client, which nothing else here needs): true once the member serves.
etcd_healthy() {
  local reply
  reply=$(timeout 2 bash -c "exec 3<>/dev/tcp/$1/$2 && printf 'GET /health HTTP/1.0\r\n\r\n' >&3 && cat <&3" 2>/dev/null) || return 1
  [[ $reply == *'"health":"true"'* ]]
}

start_etcd_cluster() {
  local members=$1 dir=$2 cluster="" i c p
  mkdir -p "$dir"
  for i in $(seq 0 $((members - 1))); do cluster+="m$i=http://127.0.0.1:$((23791 + 2 * i)),"; done
  endpoints=""
  endpoint_list=""
  for i in $(seq 0 $((members - 1))); do
    c=http://127.0.0.1:$((23790 + 2 * i)); p=http://127.0.0.1:$((23791 + 2 * i))
    etcd --name "m$i" --data-dir "$dir/etcd-m$i" --listen-client-urls "$c" --advertise-client-urls "$c" \
        --listen-peer-urls "$p" --initial-advertise-peer-urls "$p" --initial-cluster "${cluster%,}" \
        --initial-cluster-token "bench-$$" --initial-cluster-state new 2>"$dir/etcd-m$i.log" &
    etcd_pids+=($!)
    endpoints+="\"$c\","
    endpoint_list+="$c,"
  done
  endpoints="[${endpoints%,}]"
  endpoint_list=${endpoint_list%,}
  for i in $(seq 1 200); do
    etcd_healthy 127.0.0.1 23790 && break
    [ "$i" = 200 ] && { echo "etcd did not start" >&2; tail "$dir/etcd-m0.log" >&2; return 1; }
    sleep 0.1
  done
  echo "store: etcd $(etcd --version | head -1 | cut -d' ' -f3), $members member(s) on loopback"
}
