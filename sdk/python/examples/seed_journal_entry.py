from uapk_sdk import UAPKClient
import json
client = UAPKClient(
    gateway_url="https://gateway.your-company.com",
    app_id="financial-ai-assistant",
    private_key_path="/secure/ai-assistant.pem"
)
# AI wants to create a journal entry
journal_data = {
    "account": "4000-Revenue",
    "debit": 0,
    "credit": 250000,
    "description": "Q3 product sales accrual",
    "supporting_docs": ["sales_report_q3.pdf"]
}
response = client.execute(
    action="journal_entry",
    parameters=journal_data,
    justification="AI detected revenue recognition timing difference"
)
if response.status == "PENDING_APPROVAL":
    print(f"Journal entry requires approval: {response.approval_id}")
    # Finance manager gets notification to review
