// Package auth is the directory: domains, accounts, aliases and groups;
// password hashing and login checks; the failed-login limiter shared by
// every protocol; recipient routing expansion; and the one access check
// (Authorize) that every front end uses. Front ends and the admin CLI reach
// identity only through a Directory, which sits on storage.Store.
//
// Invariants:
//
//   - Every login reads the account row (enabled, credential generation,
//     policy). Only the argon2 result is cached, keyed by
//     HMAC-SHA256(process-random key, account id | CredGen | password), in
//     a bounded LRU; a password change bumps CredGen, so a cached result of
//     an old password can never be reached again. No password or hash is
//     kept in memory beyond one call.
//   - Every login failure the client can see is ErrAuthFailed (plus
//     ErrRateLimited before any work, and ErrTemporary when the check could
//     not run). Unknown users, shared accounts and accounts without a
//     password are verified against a dummy hash made at New with the same
//     parameters, so they cost and read the same as a wrong password.
//     Unknown users' cache keys use id 0 and include the folded login name.
//   - The enabled flag and the policy are checked after the password, so
//     the timing does not tell a disabled account from a wrong password.
//   - Argon2 runs under a semaphore of HashWorkers; waiting longer than
//     HashQueueTimeout gives ErrTemporary rather than a queue that grows
//     without bound under a password-spraying attack.
//   - One store-backed limiter: keys "ip:<address>" (IPv4) or
//     "ip:<prefix>/64" (IPv6) and "acct:<folded login>", shared by SMTP,
//     IMAP, POP3 and HTTP so rotating protocols gains nothing. Over the
//     limit nothing is hashed. Each failure records both keys; a success
//     clears the account key only (an address that guessed one password
//     stays suspect).
//   - Each failure logs one stable line for fail2ban-style tools:
//     level=WARN msg="auth failed" proto=… ip=… user=… reason=…
//     with reason one of: unknown user, bad password, disabled, policy,
//     authzid, shared account, no password, rate limited (ip),
//     rate limited (account).
//
// Decisions not spelled out in DESIGN.md:
//
//   - SASL PLAIN authorization ids (RFC 4616 §2) equal to the login after
//     folding are accepted; any other is refused (no proxy rights exist).
//   - ParseAddress refuses source routes, the %-hack, bang paths, quoted
//     local parts containing '@' and address literals (ErrBadAddress): none
//     of them is a local-delivery form, and SMTP uses the same parser to
//     refuse open-relay tricks. A quoted local part whose content is a
//     plain dot-atom is unquoted, so "john"@x.test is john@x.test.
//   - Config.SubaddressSeparator: the zero value means the default "+";
//     subaddressing is switched off with NoSubaddress.
//   - Resolve order for an address in a served local domain: exact account
//     → exact alias or group (expanded recursively) → the
//     subaddress-stripped address (user+tag → user) → built-in postmaster@
//     and abuse@ → the domain's catch-all → ErrUnknownRecipient.
//   - postmaster@ and abuse@ of every domain always resolve (RFC 5321
//     §4.5.1, RFC 2142). AddDomain creates them as aliases with no
//     targets (or, where the store insists on a target, with their own
//     address as the only target, which means the same: an alias that
//     names only itself has no real targets); such an alias, or a missing
//     one, resolves to the domain's
//     oldest enabled user account, else the oldest enabled user account of
//     any domain, else ErrUnknownRecipient. An operator who wants someone
//     else gives the alias targets (remove it and add it with targets).
//     Bare "postmaster" (RFC 5321 §4.1.1.3) is postmaster@ the oldest
//     domain (lowest id).
//   - Expansion: each address is expanded at most once per Resolve, so a
//     cycle (a → b → a) or two paths to one address end quietly and every
//     account receives one copy; deeper than MaxDepth or more than
//     MaxExpansion recipients is ErrExpansion (wraps storage.ErrLimit).
//     Unknown or malformed targets below the top level are skipped with a
//     warning; an expansion that yields nothing is ErrUnknownRecipient.
//     Alias targets in domains not served here become External routes.
//   - Disabled accounts receive no mail (they are suspended or being
//     removed): as the only recipient they make ErrUnknownRecipient.
//   - Remote (relayed) domains: an address is accepted only when it is
//     listed — an alias or group entry in that domain (AddAlias there
//     needs no targets and stores the address itself as its target; lists
//     are not expanded here, the next hop owns them), or its
//     subaddress-stripped form is — or when the domain has a
//     catch-all, which accepts every local part. The route is
//     Route{External: address, Relay: RelayHost}. Their postmaster@ and
//     abuse@ built-ins still resolve locally.
//   - A top-level address in a domain not served here is ErrUnknownDomain;
//     whether to relay it (authenticated submission) is smtpd's decision.
//   - Authorize: the system principal may do anything; an owner holds
//     every right on its objects implicitly; anyone else needs the right
//     in a grant. A disabled principal is refused everything. Ownership is
//     known for mailboxes (MailboxByID under the principal) and, for other
//     kinds, only when the store implements ObjectOwner.
package auth
