# Financial AI decision logic
class FinancialAI:
    def __init__(self):
        self.uapk = UAPKClient(
            gateway_url=os.getenv("UAPK_GATEWAY_URL"),
            app_id="financial-ai-assistant",
            private_key_path="/etc/uapk/ai-key.pem"
        )
    def process_month_end_accruals(self, transactions):
        for txn in transactions:
            if txn.amount > 1000000:
                # High-value transactions need CFO approval
                response = self.uapk.execute(
                    action="journal_entry",
                    parameters={
                        "account": txn.account,
                        "amount": txn.amount,
                        "description": txn.description
                    },
                    escalation_level="cfo"
                )
            else:
                # Standard approval flow
                response = self.uapk.execute(
                    action="journal_entry",
                    parameters=txn.to_dict()
                )
            # Log the response for audit trail
            self.log_action(response)
