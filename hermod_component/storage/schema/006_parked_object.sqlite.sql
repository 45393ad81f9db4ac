-- Replication (issue 5): an item parked again (delivered again after a batch failed, or after
-- a restart before its mark was saved) updates its parked row, and a conflict between the same
-- two versions recorded again is not added twice; these indexes find them.

CREATE INDEX parked_object ON parked (backend, object_id);
CREATE INDEX conflicts_object ON conflicts (backend, object_id);
