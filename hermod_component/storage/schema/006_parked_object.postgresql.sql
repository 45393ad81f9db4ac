-- Replication (issue 5): parking an item that is parked already (delivered again after a
-- batch failed, or after a restart before its mark was saved) updates the parked row instead
-- of adding a second one; this index finds it.

CREATE INDEX parked_object ON parked (backend, object_id);
