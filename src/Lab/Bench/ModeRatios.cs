using System.Globalization;
using System.Text;

namespace ProxyPlanes.Bench;

/// <summary>
/// One mode's numbers as a ratio to another's in the same run: how issue 13 states IPVS's targets,
/// since IPVS is measured in the VM lane, where emulation inflates every absolute number.
/// </summary>
public static class ModeRatios
{
    /// <summary>A measured quantity, the most the ratio may be (issue 13's targets for IPVS ÷ nftables), and how to read it from a result.</summary>
    public sealed record Row(string What, double Target, Func<BenchResult, double> Value);

    public static IReadOnlyList<Row> IssueTargets { get; } =
    [
        new("one endpoint added → kernel, p50", 1, r => Kind(r, "endpoint added")),
        new("one endpoint removed → kernel, p50", 1, r => Kind(r, "endpoint removed")),
        new("one endpoint not ready → kernel, p50", 1, r => Kind(r, "endpoint not ready")),
        new("one service added → kernel, p50", 0.5, r => Kind(r, "service added")),
        new("cold sync", 2, r => r.ColdSyncMs),
        new("periodic sync with nothing changed, p50", 5, r => r.PeriodicNoOp.P50),
    ];

    /// <summary>
    /// A Markdown table of <paramref name="mode"/> ÷ <paramref name="baseline"/> at each size both were
    /// measured at, against <see cref="IssueTargets"/>; empty when the run lacks either mode.
    /// </summary>
    public static string Markdown(IReadOnlyList<BenchResult> results, string mode = "ipvs", string baseline = "nftables")
    {
        var pairs = results.Where(r => r.Mode == mode)
            .Join(results.Where(r => r.Mode == baseline), r => (r.Services, r.EndpointsPerService), r => (r.Services, r.EndpointsPerService), (m, b) => (Mode: m, Baseline: b))
            .ToList();
        if (pairs.Count == 0) return "";
        var md = new StringBuilder();
        md.Append(CultureInfo.InvariantCulture, $"\n{mode} ÷ {baseline} in this run (issue 13's targets):\n\n");
        md.Append(CultureInfo.InvariantCulture, $"| services × endpoints | what | {mode} | {baseline} | ratio | target | met |\n| --- | --- | ---: | ---: | ---: | ---: | --- |\n");
        foreach (var (m, b) in pairs)
        foreach (var row in IssueTargets)
        {
            var (value, against) = (row.Value(m), row.Value(b));
            var ratio = value > 0 && against > 0 ? value / against : double.NaN;
            var met = double.IsNaN(ratio) ? "not measured" : ratio <= row.Target ? "yes" : $"no: {ratio / row.Target:0.00}× the target";
            md.Append(CultureInfo.InvariantCulture,
                $"| {m.Services} × {m.EndpointsPerService} | {row.What} | {BenchReport.Ms(value)} | {BenchReport.Ms(against)} | {(double.IsNaN(ratio) ? "–" : ratio.ToString("0.00", CultureInfo.InvariantCulture) + "×")} | ≤ {row.Target:0.#}× | {met} |\n");
        }
        return md.ToString();
    }

    /// <summary>The p50 of one change kind; 0 when the run made none of that kind (too few --changes).</summary>
    private static double Kind(BenchResult result, string kind) =>
        result.IncrementalByKind.TryGetValue(kind, out var stats) && stats.Count > 0 ? stats.P50 : 0;
}
