-- not_seen.lua: a device that has not checked in for 30 days may be lost, or its agent removed.
rule {
	id = "seen-recently",
	title = "Device checked in within the last 30 days",
	description = "a device that has not checked in for 30 days may be lost, or its agent removed.",
	severity = "medium",
	check = function(d)
		if d.last_seen == nil then
			return false, "the device has never checked in"
		end
		local days = days_since(d.last_seen)
		if days <= 30 then
			return true
		end
		return false, string.format("last seen %d days ago", math.floor(days))
	end,
	actions = { "notify" },
}
