-- app_control.lua: the app-control section of the device's effective policy (d.policy.app_control):
-- blocked apps must not be installed and required apps must be. Evaluated only when the policy
-- turns app control on (enabled = true); with enabled = false the lists are kept but ignored.
local function list(t)
	if type(t) == "nil" then
		return {}
	end
	return t
end

rule {
	id = "app-control",
	title = "Apps follow the app-control policy",
	description = "blocked apps are not installed and required apps are (only when app control is enabled).",
	severity = "high",
	check = function(d)
		local ac = d.policy and d.policy.app_control
		if not ac or ac.enabled ~= true then
			return true, "app control disabled"
		end
		for _, id in ipairs(list(ac.blocked)) do
			if has_app(d, id) then
				return false, "blocked app installed: " .. id
			end
		end
		for _, id in ipairs(list(ac.required)) do
			if not has_app(d, id) then
				return false, "required app missing: " .. id
			end
		end
		return true
	end,
	actions = { "notify", "mark_noncompliant" },
}
