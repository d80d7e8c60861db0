package delivery

import "tidings/storage"

// Envelope is one accepted SMTP transaction, as smtpd hands it to
// Local.Deliver: the reverse path, the recipients with their routes (from
// Local.Route at RCPT time) and the headers common to every copy.
type Envelope struct {
	// ID names the transaction in logs and in the Received header; it is
	// the queue id of a purely local delivery.
	ID string
	// From is the reverse path; "" is the null sender.
	From string
	// Recipients in RCPT order.
	Recipients []Recipient
	// ENVID and RET are the RFC 3461 MAIL parameters.
	ENVID string
	RET   string
	// SMTPUTF8 and EightBit record the MAIL parameters (RFC 6531, RFC 6152).
	SMTPUTF8 bool
	EightBit bool
	// Prefix holds the header fields every copy gets above the blob, in
	// order: Received, Authentication-Results, and on submission a Date or
	// Message-ID that the client left out (RFC 6409 §8.2, §8.3). Each field
	// ends in CRLF.
	Prefix []byte
	// Submission marks mail from an authenticated client: recipients in
	// domains not served here are queued for remote delivery and signed
	// with DKIM for SignDomain.
	Submission bool
	// SignDomain is the domain whose DKIM key signs outbound copies
	// (the From: domain on submission); "" = no signature.
	SignDomain string
}

// Recipient is one accepted RCPT.
type Recipient struct {
	// Address is the forward path as given.
	Address string
	// Notify and ORCPT are the RFC 3461 RCPT parameters.
	Notify string
	ORCPT  string
	// Route is what Local.Route decided at RCPT time.
	Route RouteResult
}

// target is one local mailbox copy being built.
type target struct {
	addr   string // Delivered-To
	target storage.DeliveryTarget
}
