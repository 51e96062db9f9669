package cli

import (
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"

	"github.com/uapk-gateway/uapk-proxy/evidence"
)

// verifyBundle is `uapk-proxy verify FILE.zip`: it checks an evidence
// bundle offline and prints "ok: ..." (exit 0), or names the first problem
// (exit 1).
func verifyBundle(cmd *cobra.Command, path string) error {
	f, err := os.Open(path)
	if err != nil {
		return exitf(1, "%v", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return exitf(1, "%v", err)
	}
	rep, err := evidence.Verify(f, st.Size())
	if err != nil {
		p := rep.Problem
		return exitf(1, "%s: broken: %s: %s", path, p.Code, p.Message)
	}
	w := cmd.OutOrStdout()
	if len(rep.Instances) > 0 {
		printFleetReport(w, path, rep)
		return nil
	}
	fmt.Fprintf(w, "ok: %s: %s bundle of %s, records %d to %d (%d records, %s to %s), chain intact; %d files match SHA256SUMS signed by gateway key %s; %d approvals, %d signed statements verified, %d approved releases complete; anchored by %s checkpoint at record %d\n",
		path, rep.Framework, rep.App, rep.FirstSeq, rep.LastSeq, rep.Records, rep.FirstTime, rep.LastTime, rep.Files, rep.GatewayKey,
		rep.Approvals, rep.Statements, rep.Released, rep.Checkpoint.Source, rep.Checkpoint.Seq)
	for _, n := range rep.Notes {
		fmt.Fprintf(w, "note: %s\n", n)
	}
	return nil
}

// printFleetReport is verify's "ok" for a fleet bundle: the whole, then
// each instance with the gateway key its part rests on.
func printFleetReport(w io.Writer, path string, rep evidence.Report) {
	fmt.Fprintf(w, "ok: %s: %s fleet bundle of %s, %d instances, %d records (%s to %s), every chain intact; %d files match SHA256SUMS signed by exporter key %s; %d approvals, %d signed statements verified, %d approved releases complete\n",
		path, rep.Framework, rep.App, len(rep.Instances), rep.Records, rep.FirstTime, rep.LastTime, rep.Files, rep.ExporterKey,
		rep.Approvals, rep.Statements, rep.Released)
	for _, in := range rep.Instances {
		if in.Records == 0 {
			fmt.Fprintf(w, "  %s: no records in the range (archived to record %d, %s)\n", in.Name, in.ArchivedSeq, in.ArchivedTime)
			continue
		}
		fmt.Fprintf(w, "  %s: records %d to %d (%d), anchored by its checkpoint at record %d, gateway key %s\n",
			in.Name, in.FirstSeq, in.LastSeq, in.Records, in.Checkpoint.Seq, in.GatewayKey)
	}
	for _, n := range rep.Notes {
		fmt.Fprintf(w, "note: %s\n", n)
	}
}
