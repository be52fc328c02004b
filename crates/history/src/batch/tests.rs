//! Apply-level tests of batch jobs: the cursor, the counts, stop, duplicates.
