-- The completion e-mail of an access or portability request carries a link with a
-- secret of its own (192 bits, base64url): only its hash is kept, beside the package it
-- opens, and it ends with the package. The request's status token no longer downloads.
ALTER TABLE request_packages ADD COLUMN secret_hash TEXT;
