-- The Vapi assistants each organisation may use (issue 17 defect 6). Every organisation's
-- calls go through the deployment's one Vapi account, so an assistant config naming a Vapi
-- assistant id is honoured only when the operator (`clarion org allow-vapi-assistant`, never
-- the tenant's API key) has put that id on the organisation's list. An empty list allows none.
CREATE TABLE organization_vapi_assistants (
    org_id INTEGER NOT NULL REFERENCES organizations(id),
    vapi_assistant_id TEXT NOT NULL,
    added_at INTEGER NOT NULL,
    PRIMARY KEY (org_id, vapi_assistant_id)
) WITHOUT ROWID;
