#!/usr/bin/env bash
# The http output plugin against tests/server.py on 127.0.0.1: bodies (CBOR,
# multipart, zstd) arrive byte for byte; every answer maps to OK / RETRY /
# DROP as SPEC §8 says; Retry-After is honoured; hangs and closed
# connections are bounded RETRYs; credentials go where they belong and
# nowhere else; TLS is verified (and mutual TLS works).
source "$(dirname "$0")/lib.sh"
t_setup

GW=gw-hall-7 UP=ingest-eu RG=eu-central BATCH=9001
ID=(--gateway "$GW" --upstream "$UP" --region "$RG" --batch-id "$BATCH")
CHECK=(python3 "$T_DIR/check.py")

t_server
URL=http://127.0.0.1:$PORT/v1/crashes

# ---- bodies ----

t_case cbor
t_drive "${ID[@]}" --records 3 --sizes 1000,70000,0 --formats zephyr,minidump,raw --throttled \
  --out "$T/cbor" url="$URL"
t_expect OK 0
t_new_requests 1
"${CHECK[@]}" http "$(t_req "$(t_nreq)")" "$T/cbor" --body cbor --gateway "$GW" --upstream "$UP" \
  --region "$RG" --batch-id "$BATCH" || t_fail "the CBOR body differs from the batch"
[[ $(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["path"])' "$(t_req "$(t_nreq)").json") == /v1/crashes ]] ||
  t_fail "POST went to another path"

t_case multipart
t_drive "${ID[@]}" --records 3 --sizes 5000,0,123456 --formats minidump,zephyr,elf-core --throttled \
  --out "$T/mp" url="$URL" body=multipart
t_expect OK 0
"${CHECK[@]}" http "$(t_req "$(t_nreq)")" "$T/mp" --body multipart --gateway "$GW" --upstream "$UP" \
  --region "$RG" --batch-id "$BATCH" || t_fail "the multipart body differs from the batch"

if command -v zstd >/dev/null 2>&1; then
  t_case cbor_zstd
  t_drive "${ID[@]}" --records 4 --sizes 200000,10 --throttled --out "$T/cz" url="$URL" compression=zstd
  t_expect OK 0
  "${CHECK[@]}" http "$(t_req "$(t_nreq)")" "$T/cz" --body cbor --zstd --gateway "$GW" --upstream "$UP" \
    --region "$RG" --batch-id "$BATCH" || t_fail "the zstd CBOR body does not decode to the batch"

  t_case multipart_zstd
  t_drive "${ID[@]}" --records 2 --sizes 30000 --out "$T/mz" url="$URL" body=multipart compression=zstd
  t_expect OK 0
  "${CHECK[@]}" http "$(t_req "$(t_nreq)")" "$T/mz" --body multipart --zstd --gateway "$GW" --upstream "$UP" \
    --region "$RG" --batch-id "$BATCH" || t_fail "the zstd multipart body does not decode to the batch"
else
  t_log "zstd command not installed: the zstd cases are skipped"
fi

# A retried batch is the same request: same Idempotency-Key, same bytes.
t_case retry_same_bytes
t_answers '{"status": 503}' '{"status": 200}'
t_drive "${ID[@]}" --records 2 --flushes 2 --out "$T/rs" url="$URL" body=multipart
t_expect OK 0
grep -q '^result status=RETRY ' "$T_OUT.out" || t_fail "first flush was not RETRY"
t_new_requests 2
a=$(t_req $((T_BEFORE + 1))) b=$(t_req $((T_BEFORE + 2)))
cmp -s "$a.body" "$b.body" || t_fail "a retried batch was sent with other bytes"
[[ $("${CHECK[@]}" header "$a" Idempotency-Key) == "$GW/$UP/$BATCH" &&
  $("${CHECK[@]}" header "$b" Idempotency-Key) == "$GW/$UP/$BATCH" ]] || t_fail "Idempotency-Key changed on retry"

# ---- answers ----

t_case 429_retry_after_seconds
t_answers '{"status": 429, "headers": {"Retry-After": "7"}, "body": "slow down"}'
t_drive "${ID[@]}" url="$URL"
t_expect RETRY 7000
t_reason_has "HTTP 429"

t_case 429_retry_after_date
when=$(python3 -c 'import email.utils,time; print(email.utils.formatdate(time.time()+30, usegmt=True))')
t_answers "{\"status\": 429, \"headers\": {\"Retry-After\": \"$when\"}}"
t_drive "${ID[@]}" url="$URL"
t_expect RETRY
((RETRY_MS >= 25000 && RETRY_MS <= 31000)) || t_fail "Retry-After as a date gave $RETRY_MS ms, expected ~30000"

t_case 503_retry_after_huge
t_answers '{"status": 503, "headers": {"Retry-After": "99999999999999999999"}}'
t_drive "${ID[@]}" url="$URL"
t_expect RETRY 86400000

t_case 500
t_answers '{"status": 500, "body": "internal error"}'
t_drive "${ID[@]}" url="$URL"
t_expect RETRY 0
t_reason_has "HTTP 500: internal error"

t_case 408
t_answers '{"status": 408}'
t_drive "${ID[@]}" url="$URL"
t_expect RETRY 0

t_case 400
t_answers '{"status": 400, "body": "missing field \"records\"\n\u0001\u0002 at offset 12"}'
t_drive "${ID[@]}" url="$URL"
t_expect DROP 0
t_reason_has 'HTTP 400: missing field "records" .. at offset 12'

t_case 400_long_body
long=$(printf 'x%.0s' {1..99})YZ
t_answers "{\"status\": 400, \"body\": \"$long\"}"
t_drive "${ID[@]}" url="$URL"
t_expect DROP
[[ $REASON == "HTTP 400: ${long:0:100}" ]] || t_fail "reason '$REASON' is not the first 100 bytes of the body"

t_case 404
t_answers '{"status": 404}'
t_drive "${ID[@]}" url="$URL"
t_expect DROP
t_reason_has "HTTP 404"

t_case redirect_not_followed
t_answers "{\"status\": 307, \"headers\": {\"Location\": \"http://127.0.0.1:$PORT/elsewhere\"}}"
t_drive "${ID[@]}" url="$URL"
t_expect DROP
t_new_requests 1

t_case response_bounded_400
t_answers '{"status": 400, "body_size": 20000000}'
t_drive "${ID[@]}" url="$URL" max_response_bytes=1KiB
t_expect DROP
t_reason_has "HTTP 400: 0123456789abcdef"
((ELAPSED_MS < 10000)) || t_fail "a 20 MB error body took $ELAPSED_MS ms: not bounded"

t_case response_bounded_200
t_answers '{"status": 200, "body_size": 20000000}'
t_drive "${ID[@]}" url="$URL"
t_expect OK

t_case hang
t_answers '{"action": "hang", "seconds": 30}'
t_drive "${ID[@]}" url="$URL" timeout=2s connect_timeout=1s
t_expect RETRY 0
((ELAPSED_MS >= 1500 && ELAPSED_MS < 8000)) || t_fail "hang answered after $ELAPSED_MS ms, timeout was 2 s"

t_case closed_connection
t_answers '{"action": "close"}'
t_drive "${ID[@]}" url="$URL"
t_expect RETRY 0
t_reason_has "POST to http://127.0.0.1:$PORT failed"

t_case refused
t_drive "${ID[@]}" url="http://127.0.0.1:$(t_free_port)/x" connect_timeout=2s
t_expect RETRY 0

# ---- credentials ----

TOKEN=tok-$RANDOM-9f8e7d6c5b4a
printf '%s\n' "$TOKEN" >"$T/token"
t_case bearer
t_drive "${ID[@]}" url="$URL" bearer_token_file="$T/token"
t_expect OK
[[ $("${CHECK[@]}" header "$(t_req "$(t_nreq)")" Authorization) == "Bearer $TOKEN" ]] ||
  t_fail "Authorization is not 'Bearer <token>'"
t_no_leak "$TOKEN"

t_case bearer_rejected
t_answers '{"status": 401, "body": "bad token"}'
t_drive "${ID[@]}" url="$URL" bearer_token_file="$T/token"
t_expect DROP
t_no_leak "$TOKEN"

printf 'alice:pa:ss-%s\r\n' "$RANDOM" >"$T/basic"
PASS=$(head -n 1 "$T/basic" | tr -d '\r' | cut -d: -f2-)
t_case basic
t_drive "${ID[@]}" url="$URL" basic_auth_file="$T/basic"
t_expect OK
want=$(printf 'alice:%s' "$PASS" | base64 -w0)
[[ $("${CHECK[@]}" header "$(t_req "$(t_nreq)")" Authorization) == "Basic $want" ]] ||
  t_fail "Authorization is not Basic base64(alice:password)"
t_no_leak "$PASS"

t_case no_auth_header_by_default
t_drive "${ID[@]}" url="$URL"
t_expect OK
[[ -z $("${CHECK[@]}" header "$(t_req "$(t_nreq)")" Authorization) ]] || t_fail "Authorization sent without credentials"

# ---- configuration refused at init ----

t_case init_scheme
t_drive url=ftp://127.0.0.1/x
t_expect_init_fail 'http:// or https://'
t_case init_userinfo
t_drive url="http://bob:hunter2@127.0.0.1:$PORT/"
t_expect_init_fail 'must not hold a user or password'
t_no_leak hunter2
t_case init_cert_without_key
t_drive url="$URL" client_cert_file=/etc/hostname
t_expect_init_fail 'go together'
t_case init_two_auths
t_drive url="$URL" bearer_token_file="$T/token" basic_auth_file="$T/basic"
t_expect_init_fail 'exclude each other'
t_no_leak "$TOKEN"
t_case init_missing_token
t_drive url="$URL" bearer_token_file="$T/nonexistent"
t_expect_init_fail 'cannot read'
t_case init_basic_without_colon
printf 'just-a-secret-%s\n' "$RANDOM" >"$T/basic-bad"
t_drive url="$URL" basic_auth_file="$T/basic-bad"
t_expect_init_fail 'user:password'
t_no_leak "$(head -n 1 "$T/basic-bad")"

# ---- TLS: verified always, mutual TLS ----

if command -v openssl >/dev/null 2>&1; then
  (
    cd "$T"
    ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
    openssl req -x509 "${ec[@]}" -keyout ca.key -out ca.pem -days 2 -subj /CN=cg-test-ca \
      -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign
    for who in server client; do
      openssl req "${ec[@]}" -keyout $who.key -out $who.csr -subj /CN=127.0.0.1
      usage=serverAuth
      [[ $who == client ]] && usage=clientAuth
      printf 'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=%s\n' $usage >$who.ext
      openssl x509 -req -in $who.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
        -extfile $who.ext -out $who.pem
    done
  ) >"$T/openssl.log" 2>&1 || t_fail "openssl could not make test certificates: $(tail -n 5 "$T/openssl.log")"
  # A second server, TLS with client certificates required.
  plain_pid=$T_SERVER_PID plain_port=$PORT
  mkdir -p "$T/tls"
  T_SAVE=$T T=$T/tls
  t_server --tls-cert "$T_SAVE/server.pem" --tls-key "$T_SAVE/server.key" --tls-client-ca "$T_SAVE/ca.pem"
  T=$T_SAVE
  TLS_URL=https://127.0.0.1:$PORT/v1/crashes
  MTLS=(client_cert_file="$T/client.pem" client_key_file="$T/client.key")

  t_case tls_mutual
  t_drive "${ID[@]}" --records 2 --out "$T/tls-out" url="$TLS_URL" ca_file="$T/ca.pem" "${MTLS[@]}"
  t_expect OK
  "${CHECK[@]}" http "$(t_req "$(t_nreq)")" "$T/tls-out" --body cbor --gateway "$GW" --upstream "$UP" \
    --region "$RG" --batch-id "$BATCH" || t_fail "the body over TLS differs from the batch"

  t_case tls_unknown_ca
  t_drive "${ID[@]}" url="$TLS_URL" "${MTLS[@]}"
  t_expect RETRY
  t_new_requests 0

  t_case tls_without_client_cert
  t_drive "${ID[@]}" url="$TLS_URL" ca_file="$T/ca.pem"
  t_expect RETRY
  t_new_requests 0

  T_SERVER_PID=$plain_pid PORT=$plain_port REQ=$T/req CONTROL=$T/control
else
  t_log "openssl not installed: the TLS cases are skipped"
fi

t_pass
