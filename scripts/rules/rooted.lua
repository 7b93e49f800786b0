-- rooted.lua: a rooted (Android) or jailbroken (iOS) device cannot be trusted with company data.
rule {
	id = "not-rooted",
	title = "Device is not rooted or jailbroken",
	description = "a rooted (Android) or jailbroken (iOS) device cannot be trusted with company data.",
	severity = "critical",
	check = function(d)
		if d.rooted then
			return false, "the device is rooted"
		end
		if d.jailbroken then
			return false, "the device is jailbroken"
		end
		return true
	end,
	actions = { "notify", "mark_noncompliant", "block_mail" },
}
