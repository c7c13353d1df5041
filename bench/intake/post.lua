-- One ~150-byte sign-up, POSTed as JSON on every request.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"email":"ada.lovelace@example.org","name":"Ada Lovelace","zip":"37415","message":"Count me in, and keep me posted on the hearing."}'
