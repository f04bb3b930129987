-- People who objected to direct marketing (Art. 21(2)): kept so that no marketing reaches
-- them again, also after an erasure. The address is sealed under the store's own key (not
-- the person's, which an erasure shreds) and found by its keyed hash.
CREATE TABLE suppression (
    lookup TEXT PRIMARY KEY,
    identity_kind TEXT NOT NULL,
    sealed BLOB NOT NULL,
    request_id TEXT NOT NULL,
    added_at TEXT NOT NULL
);
