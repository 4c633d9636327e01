-- Retention deletes the delivery log (attempts) past log_retention in small batches by age. The
-- partial attempts_failed index (0003) holds failures only; delivered attempts outlive their
-- delivery's dedup window when log_retention is set longer than it, so every attempt is indexed.
CREATE INDEX attempts_started ON attempts (started_at_ms);
