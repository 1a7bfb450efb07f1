"""TEE attesters: evidence for a report-data digest, and the initdata binding check."""
