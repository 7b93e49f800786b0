-- usb_debugging.lua: USB debugging lets anyone with a cable install apps and read data.
rule {
	id = "usb-debugging-off",
	title = "USB debugging is off",
	description = "USB debugging lets anyone with a cable install apps and read data.",
	severity = "medium",
	platforms = { "android" },
	check = function(d)
		return d.usb_debugging ~= true
	end,
	actions = { "notify" },
}
