-- blocked_apps.lua: apps the organisation does not allow (edit the list).
local blocked = {
	"com.example.spyware",
	"com.example.torrent",
	"org.example.rootcloak",
}

rule {
	id = "no-blocked-apps",
	title = "No blocked app installed",
	description = "apps the organisation does not allow (edit the list).",
	severity = "high",
	check = function(d)
		for _, id in ipairs(blocked) do
			if has_app(d, id) then
				return false, "blocked app installed: " .. id
			end
		end
		return true
	end,
	actions = { "notify", "mark_noncompliant" },
}
