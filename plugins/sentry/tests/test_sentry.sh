#!/usr/bin/env bash
# The sentry output plugin against plugins/http/tests/server.py as the
# envelope endpoint on 127.0.0.1: one envelope per record, parsed strictly by
# the server; tags, fingerprint, deterministic event ids; minidumps as
# event.minidump and other dumps as event.attachment, byte for byte; rate
# limits (X-Sentry-Rate-Limits, Retry-After) and failures mid-batch.
T_NAME=test_sentry
source "$(dirname "$0")/../../http/tests/lib.sh"
t_setup

CHECK=(python3 "$T_DIR/check.py")
OUT=$T/out
KEY=0123456789abcdef0123456789abcdef
t_server --expect "$OUT"
printf 'http://%s@127.0.0.1:%s/42\n' "$KEY" "$PORT" >"$T/dsn"
DSN=(dsn_file="$T/dsn")
ENDPOINT=/api/42/envelope/

# event_id of recorded request N
eid() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["header"]["event_id"])' "$(t_req "$1").envelope.json"; }

t_case batch_ok
t_drive --records 3 --formats zephyr,minidump,elf-core --sizes 1500,40000,0 --throttled --out "$OUT" "${DSN[@]}"
t_expect OK 0
t_new_requests 4
"${CHECK[@]}" sentry "$REQ" "$OUT" --key "$KEY" --path "$ENDPOINT" --first "$T_BEFORE" --count 4 ||
  t_fail "the envelopes do not carry the batch"
t_no_leak "$KEY"

# The check can fail: a dump that differs from what was sent is noticed.
printf 'X' | dd of="$OUT/dump-1.bin" bs=1 seek=100 conv=notrunc status=none
if "${CHECK[@]}" sentry "$REQ" "$OUT" --key "$KEY" --path "$ENDPOINT" --first "$T_BEFORE" --count 4 2>/dev/null; then
  t_fail "check.py accepted an attachment that differs from the dump"
fi

t_case mid_batch_retry_is_idempotent
t_answers '{"status": 200}' '{"status": 502}'
t_drive --records 3 --formats minidump --flushes 2 --out "$OUT" "${DSN[@]}"
t_expect OK 0
t_records "OK,OK,OK"
grep -q '^result status=RETRY .*record 2/3: HTTP 502' "$T_OUT.out" || t_fail "first flush: $(head -n 2 "$T_OUT.out")"
[[ $(grep '^records ' "$T_OUT.out" | head -n 1) == "records OK,-,-" ]] ||
  t_fail "first flush: the accepted record is not reported: $(head -n 1 "$T_OUT.out")"
t_new_requests 5
[[ $(eid $((T_BEFORE + 1))) == $(eid $((T_BEFORE + 3))) && $(eid $((T_BEFORE + 2))) == $(eid $((T_BEFORE + 4))) ]] ||
  t_fail "a retried record got another event_id"
"${CHECK[@]}" sentry "$REQ" "$OUT" --key "$KEY" --path "$ENDPOINT" --first $((T_BEFORE + 2)) --count 3 ||
  t_fail "the retried envelopes do not carry the batch"

t_case 429_rate_limits
t_answers '{"status": 429, "headers": {"X-Sentry-Rate-Limits": "60:error;attachment:organization", "Retry-After": "5"}}'
t_drive --records 3 --out "$OUT" "${DSN[@]}"
t_expect RETRY 60000
t_new_requests 1

t_case 429_longest_applicable_limit
t_answers '{"status": 429, "headers": {"X-Sentry-Rate-Limits": "30::organization, 900:transaction;session:project, 45.2:attachment:key"}}'
t_drive --records 2 --out "$OUT" "${DSN[@]}"
t_expect RETRY 46000

t_case 429_limits_not_ours_use_retry_after
t_answers '{"status": 429, "headers": {"X-Sentry-Rate-Limits": "600:transaction:project", "Retry-After": "5"}}'
t_drive --records 2 --out "$OUT" "${DSN[@]}"
t_expect RETRY 5000

t_case 429_bare
t_answers '{"status": 429}'
t_drive --records 2 --out "$OUT" "${DSN[@]}"
t_expect RETRY 60000

t_case rate_limited_after_success
t_answers '{"status": 200, "headers": {"X-Sentry-Rate-Limits": "20:error:project"}}'
t_drive --records 3 --out "$OUT" "${DSN[@]}"
t_expect RETRY 20000
t_records "OK,-,-"
t_new_requests 1

t_case rate_limit_on_last_record_is_ok
t_answers '{"status": 200}' '{"status": 200, "headers": {"X-Sentry-Rate-Limits": "20:error:project"}}'
t_drive --records 2 --out "$OUT" "${DSN[@]}"
t_expect OK 0

t_case 500
t_answers '{"status": 500, "body": "upstream sad"}'
t_drive --records 2 --out "$OUT" "${DSN[@]}"
t_expect RETRY 0
t_records "-,-"
t_reason_has "record 1/2: HTTP 500: upstream sad"
t_new_requests 1

t_case one_record_rejected
t_answers '{"status": 400, "body": "invalid event payload"}'
t_drive --records 3 --out "$OUT" "${DSN[@]}"
t_expect DROP 0
t_records "DROP,OK,OK"
t_new_requests 3
t_reason_has "record 1/3"
t_reason_has "HTTP 400: invalid event payload"
t_reason_has "(1 of 3 rejected)"

t_case wrong_key_stops
t_answers '{"status": 403, "body": "{\"detail\":\"event submission rejected with_reason: ProjectId\"}"}'
t_drive --records 3 --out "$OUT" "${DSN[@]}"
t_expect DROP
t_new_requests 1
t_reason_has "HTTP 403"

t_case hang
t_answers '{"action": "hang", "seconds": 30}'
t_drive --records 2 --out "$OUT" "${DSN[@]}" timeout=2s
t_expect RETRY 0
((ELAPSED_MS >= 1500 && ELAPSED_MS < 8000)) || t_fail "hang answered after $ELAPSED_MS ms, timeout was 2 s"

t_case closed_connection
t_answers '{"action": "close"}'
t_drive --records 2 --out "$OUT" "${DSN[@]}"
t_expect RETRY 0

t_case dsn_with_path_prefix
printf 'http://%s:oldsecret@127.0.0.1:%s/sentry/7/\n' "$KEY" "$PORT" >"$T/dsn-prefix"
t_drive --records 1 --formats minidump --out "$OUT" dsn_file="$T/dsn-prefix"
t_expect OK
"${CHECK[@]}" sentry "$REQ" "$OUT" --key "$KEY" --path /sentry/api/7/envelope/ --first "$T_BEFORE" --count 1 ||
  t_fail "DSN with a path prefix"
! grep -q oldsecret "$(t_req "$(t_nreq)").body" || t_fail "the DSN's secret key was sent in the envelope"
t_no_leak oldsecret

k=0
for bad in "http://127.0.0.1:$PORT/42|public key" "http://$KEY@127.0.0.1:$PORT/|project id" \
  "ftp://$KEY@127.0.0.1/42|https://" "not a dsn $KEY|not a URL"; do
  k=$((k + 1))
  t_case "bad_dsn_$k"
  printf '%s\n' "${bad%|*}" >"$T/dsn-bad"
  t_drive dsn_file="$T/dsn-bad"
  t_expect_init_fail "${bad##*|}"
  t_no_leak "$KEY"
done

t_case missing_dsn_file
t_drive dsn_file="$T/nonexistent"
t_expect_init_fail 'cannot read'

t_pass
