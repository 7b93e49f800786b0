-- min_os_version.lua: the OS must still receive security updates: Android 12 or later, iOS 16 or later.
rule {
	id = "min-os-version",
	title = "OS version is supported (Android 12+, iOS 16+)",
	description = "the OS must still receive security updates: Android 12 or later, iOS 16 or later.",
	severity = "high",
	platforms = { "android", "ios" },
	check = function(d)
		local minimum = d.platform == "ios" and "16" or "12"
		if version_ge(d.os_version, minimum) then
			return true
		end
		return false, "OS " .. d.os_version .. " is older than " .. minimum
	end,
	actions = { "notify", "mark_noncompliant" },
}
