-- encryption.lua: storage encryption must be on, so a lost device does not leak its data.
rule {
	id = "storage-encrypted",
	title = "Storage encryption is on",
	description = "storage encryption must be on, so a lost device does not leak its data.",
	severity = "high",
	check = function(d)
		return d.encrypted == true
	end,
	actions = { "notify", "mark_noncompliant" },
}
