using ProxyPlanes.Model;
using ProxyPlanes.NodeTools;

namespace ProxyPlanes.Iptables;

/// <summary>Which iptables the node uses: the nf_tables-based one or the legacy x_tables one.</summary>
public enum IptablesVariant { Nft, Legacy }

/// <summary>iptables-save and iptables-restore of one IP family: the only part of an iptables data plane that touches the kernel.</summary>
public interface IIptablesApplier
{
    IptablesVariant Variant { get; }

    /// <summary>iptables-save of one table.</summary>
    Task<string> SaveAsync(string table, CancellationToken cancellationToken);

    /// <summary>
    /// iptables-save of one table, each line handed to <paramref name="onLine"/> as the tool prints it: the command
    /// applier never holds the table as one string (the nat table at 10,000 services is ~10 MB). A failing tool
    /// throws after some lines may have been handed over: the caller drops what it gathered.
    /// </summary>
    async Task SaveAsync(string table, LineHandler onLine, CancellationToken cancellationToken) =>
        OutputLines.ForEach(await SaveAsync(table, cancellationToken).ConfigureAwait(false), onLine);

    /// <summary>iptables-restore --noflush of a whole script; each table commits atomically or not at all.</summary>
    Task RestoreAsync(string script, CancellationToken cancellationToken);

    /// <summary>
    /// <see cref="RestoreAsync(string, CancellationToken)"/> of a script held as UTF-8 chunks; the
    /// command applier streams it to the tool's stdin without making it one string.
    /// </summary>
    Task RestoreAsync(RestoreScript script, CancellationToken cancellationToken) => RestoreAsync(script.ToString(), cancellationToken);

    /// <summary>
    /// The rules of one chain as <c>iptables -S CHAIN</c> prints them (its <c>-N</c> line first), or
    /// null when the table has no such chain. Reads that chain only, not the whole table (the
    /// periodic canary check).
    /// </summary>
    Task<string?> ListChainAsync(string table, string chain, CancellationToken cancellationToken);
}

/// <summary>The names of the iptables tools, per IP family and variant.</summary>
public static class IptablesTools
{
    /// <summary>The family's tool ("iptables" or "ip6tables").</summary>
    public static string Base(IpFamily family) => family == IpFamily.IPv4 ? "iptables" : "ip6tables";

    /// <summary>The variant's word in the tool names ("nft" or "legacy").</summary>
    public static string Word(IptablesVariant variant) => variant == IptablesVariant.Nft ? "nft" : "legacy";

    /// <summary>A tool of one family and variant: <c>Name(IPv6, Legacy, "restore")</c> is <c>ip6tables-legacy-restore</c>.</summary>
    public static string Name(IpFamily family, IptablesVariant variant, string suffix) => $"{Base(family)}-{Word(variant)}-{suffix}";

    /// <summary>--iptables-variant: "nft" or "legacy"; null for "auto" (detect with <see cref="IptablesCommandApplier.DetectAsync"/>).</summary>
    public static IptablesVariant? ParseVariant(string text) => text switch
    {
        "nft" => IptablesVariant.Nft,
        "legacy" => IptablesVariant.Legacy,
        "auto" => null,
        _ => throw new ArgumentException($"unknown iptables variant '{text}' (auto, nft or legacy)", nameof(text)),
    };
}

/// <summary>
/// Drives iptables-{nft,legacy}-save / -restore (ip6tables-* for IPv6) found on PATH.
/// <paramref name="commandPrefix"/> (tests only) runs them elsewhere, e.g. <c>["ip", "netns", "exec", NAME]</c>.
/// </summary>
public sealed class IptablesCommandApplier(IptablesVariant variant, IpFamily family, IReadOnlyList<string>? commandPrefix = null) : IIptablesApplier
{
    private static readonly TimeSpan Timeout = TimeSpan.FromMinutes(2);

    public IptablesVariant Variant => variant;

    public IpFamily Family => family;

    private string Tool(string suffix) => IptablesTools.Name(family, variant, suffix);

    public async Task<string> SaveAsync(string table, CancellationToken cancellationToken) =>
        CheckSave(table, await RunAsync(Tool("save"), ["-t", table], null, cancellationToken).ConfigureAwait(false)).StandardOutput;

    public async Task SaveAsync(string table, LineHandler onLine, CancellationToken cancellationToken) =>
        CheckSave(table, await RunReadingAsync(Tool("save"), ["-t", table], (output, token) => OutputLines.ReadAsync(output, onLine, token), cancellationToken).ConfigureAwait(false));

    private CommandResult CheckSave(string table, CommandResult result) => result.Succeeded ? result
        : throw new CommandException($"{ExternalCommand.Format(Tool("save"), ["-t", table])} exited with {result.ExitCode}: {ExternalCommand.FirstLines(result.StandardError, 5)}", result);

    public Task RestoreAsync(string script, CancellationToken cancellationToken) =>
        RestoreAsync((input, token) => input.WriteAsync(script.AsMemory(), token), cancellationToken, RestoreTimeout(script.Length));

    public Task RestoreAsync(RestoreScript script, CancellationToken cancellationToken) =>
        RestoreAsync(script.WriteToAsync, cancellationToken, RestoreTimeout(script.Length));

    /// <summary>
    /// How long a restore of <paramref name="scriptBytes"/> may take before it is killed: the 2 minutes of every
    /// tool, plus a minute per 10 MB of script. iptables-nft-restore 1.8.9 is superlinear in chains: the cold sync
    /// at 50,000 services × 5 endpoints (300,000 chains, ~120 MB) took ~80 s of CPU on a quiet machine and more
    /// than 2 minutes under load, where a 10,000-service script (~10 MB) takes a few seconds.
    /// </summary>
    public static TimeSpan RestoreTimeout(long scriptBytes) => Timeout + TimeSpan.FromMinutes(scriptBytes / 10_000_000.0);

    private async Task RestoreAsync(Func<TextWriter, CancellationToken, Task> writeScript, CancellationToken cancellationToken, TimeSpan? timeout = null)
    {
        // -w: wait for the xtables lock other tools (kubelet, CNI plugins) may hold.
        // Its output, a listing (-S) a script may start with, is drained unread: over our chains it is the whole table.
        var result = await RunAsync(Tool("restore"), ["-w", "5", "--noflush"],
            (file, args) => ExternalCommand.RunWithInputAsync(file, args, writeScript, (output, token) => output.CopyToAsync(Stream.Null, token), timeout ?? Timeout, cancellationToken)).ConfigureAwait(false);
        if (!result.Succeeded)
            throw new CommandException($"{Tool("restore")} exited with {result.ExitCode}: {ExternalCommand.FirstLines(result.StandardError, 5)}", result);
    }

    public async Task<string?> ListChainAsync(string table, string chain, CancellationToken cancellationToken)
    {
        var tool = $"{IptablesTools.Base(family)}-{IptablesTools.Word(variant)}";
        string[] arguments = ["-w", "5", "-t", table, "-S", chain];
        var result = await RunAsync(tool, arguments, null, cancellationToken).ConfigureAwait(false);
        if (result.Succeeded) return result.StandardOutput;
        // Exit 1: the chain is gone (legacy says "No chain/target/match by that name", iptables-nft 1.8.9
        // "chain ... is incompatible"). Anything else (2: bad usage, 4: the lock) is a failure to read.
        if (result.ExitCode == 1) return null;
        throw new CommandException($"{ExternalCommand.Format(tool, arguments)} exited with {result.ExitCode}: {ExternalCommand.FirstLines(result.StandardError, 5)}", result);
    }

    /// <summary>Runs a tool; a tool that cannot be started or hangs is a <see cref="CommandException"/> like a refusal.</summary>
    private Task<CommandResult> RunAsync(string tool, IReadOnlyList<string> arguments, Func<TextWriter, CancellationToken, Task>? writeInput, CancellationToken cancellationToken) =>
        RunAsync(tool, arguments, (file, args) => ExternalCommand.RunWithInputAsync(file, args, writeInput, Timeout, cancellationToken));

    /// <summary>Runs a tool with its standard output handed to <paramref name="readOutput"/> as it comes.</summary>
    private Task<CommandResult> RunReadingAsync(string tool, IReadOnlyList<string> arguments, Func<Stream, CancellationToken, Task> readOutput, CancellationToken cancellationToken) =>
        RunAsync(tool, arguments, (file, args) => ExternalCommand.RunWithOutputAsync(file, args, readOutput, Timeout, cancellationToken));

    private async Task<CommandResult> RunAsync(string tool, IReadOnlyList<string> arguments, Func<string, IEnumerable<string>, Task<CommandResult>> run)
    {
        var prefix = commandPrefix ?? [];
        try
        {
            return prefix.Count == 0
                ? await run(tool, arguments).ConfigureAwait(false)
                : await run(prefix[0], [.. prefix.Skip(1), tool, .. arguments]).ConfigureAwait(false);
        }
        catch (TimeoutException e)
        {
            throw new CommandException(e.Message, null, e);
        }
    }

    /// <summary>
    /// Picks the variant the node already uses, the way the iptables-wrapper shipped with
    /// kube-proxy does: the kubelet's canary chains name it; otherwise the variant holding more
    /// rules wins; a node with no rules at all gets nft.
    /// </summary>
    public static async Task<IptablesVariant> DetectAsync(IpFamily family, CancellationToken cancellationToken)
    {
        var nft = await TrySaveAllAsync(IptablesTools.Name(family, IptablesVariant.Nft, "save"), cancellationToken).ConfigureAwait(false);
        var legacy = await TrySaveAllAsync(IptablesTools.Name(family, IptablesVariant.Legacy, "save"), cancellationToken).ConfigureAwait(false);
        if (nft is null && legacy is null)
            throw new CommandException($"neither {IptablesTools.Name(family, IptablesVariant.Nft, "save")} nor {IptablesTools.Name(family, IptablesVariant.Legacy, "save")} could be run: install the iptables package");
        if (nft is null) return IptablesVariant.Legacy;
        if (legacy is null) return IptablesVariant.Nft;
        static bool HasKubeletCanary(string save) => save.Contains("KUBE-IPTABLES-HINT", StringComparison.Ordinal) || save.Contains("KUBE-KUBELET-CANARY", StringComparison.Ordinal);
        if (HasKubeletCanary(nft)) return IptablesVariant.Nft;
        if (HasKubeletCanary(legacy)) return IptablesVariant.Legacy;
        return CountRules(legacy) > CountRules(nft) ? IptablesVariant.Legacy : IptablesVariant.Nft;
    }

    /// <summary>--iptables-variant: the variant named, or for "auto" the one the node uses (<see cref="DetectAsync"/>).</summary>
    public static async Task<IptablesVariant> ResolveAsync(string variant, IpFamily family, CancellationToken cancellationToken) =>
        IptablesTools.ParseVariant(variant) ?? await DetectAsync(family, cancellationToken).ConfigureAwait(false);

    /// <summary>Whether this node's kernel and tools can program <paramref name="family"/> (ip6tables may be missing or disabled).</summary>
    public static async Task<bool> IsAvailableAsync(IpFamily family, IptablesVariant variant, CancellationToken cancellationToken) =>
        await TrySaveAllAsync(IptablesTools.Name(family, variant, "save"), cancellationToken, ["-t", "nat"]).ConfigureAwait(false) is not null;

    private static int CountRules(string save) => save.Split('\n').Count(l => l.StartsWith("-A ", StringComparison.Ordinal));

    private static async Task<string?> TrySaveAllAsync(string tool, CancellationToken cancellationToken, string[]? arguments = null)
    {
        try
        {
            var result = await ExternalCommand.RunAsync(tool, arguments ?? [], null, cancellationToken).ConfigureAwait(false);
            return result.Succeeded ? result.StandardOutput : null;
        }
        catch (CommandException)
        {
            return null;
        }
    }
}
