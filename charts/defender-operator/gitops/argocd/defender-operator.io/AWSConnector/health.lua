-- Argo CD health check for defender-operator.io/AWSConnector, in the layout of Argo CD's resource_customizations
-- (health.lua, health_test.yaml, testdata/). Follows kstatus: no status or an unobserved generation -> Progressing;
-- Paused=True -> Suspended; Stalled=True -> Degraded; Reconciling=True -> Progressing; Ready=True -> Healthy;
-- anything else -> Progressing. Deleting objects are Progressing (Argo CD also says so). An organization's member
-- rollout (MembersReady not True) is named in a Healthy object's message.
local hs = {status = "Progressing", message = "Waiting for defender-operator to observe the object"}
if obj.metadata ~= nil and obj.metadata.deletionTimestamp ~= nil then
  hs.message = "Deleting: cleaning up the connector and the stack"
  return hs
end
if obj.status == nil or obj.status.conditions == nil then
  return hs
end
local generation = obj.metadata and obj.metadata.generation or nil
if generation ~= nil and obj.status.observedGeneration ~= generation then
  hs.message = "Waiting for defender-operator to observe generation " .. tostring(generation)
  return hs
end
local ready = nil
local reconciling = nil
local members = nil
for _, condition in ipairs(obj.status.conditions) do
  if condition.type == "Paused" and condition.status == "True" then
    hs.status = "Suspended"
    hs.message = condition.message or "Paused"
    return hs
  end
  if condition.type == "Stalled" and condition.status == "True" then
    hs.status = "Degraded"
    hs.message = (condition.reason or "Stalled") .. ": " .. (condition.message or "")
    return hs
  end
  if condition.type == "Ready" then
    ready = condition
  end
  if condition.type == "Reconciling" then
    reconciling = condition
  end
  if condition.type == "MembersReady" then
    members = condition
  end
end
if ready ~= nil and ready.status == "True" and (reconciling == nil or reconciling.status ~= "True") then
  hs.status = "Healthy"
  hs.message = ready.message or "Onboarded"
  if members ~= nil and members.status ~= "True" then
    -- An organization: the management account is onboarded; the member accounts are still rolling out (or some
    -- failed), which is where people look.
    hs.message = hs.message .. "; members: " .. (members.reason or "") .. ": " .. (members.message or "")
  end
  return hs
end
if ready ~= nil then
  hs.message = (ready.reason or "Reconciling") .. ": " .. (ready.message or "")
end
return hs
