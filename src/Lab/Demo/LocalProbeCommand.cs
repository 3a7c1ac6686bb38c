using System.CommandLine;
using System.Globalization;
using ProxyPlanes.Sandbox;
using ProxyPlanes.Sandboxed;

namespace ProxyPlanes.Demo;

/// <summary>
/// The demo's requests, one at a time: from this process (<see cref="RequestsAsync"/>), or from a child process in
/// a cgroup (<see cref="RequestsInCgroupAsync"/>, the hidden <c>proxyplanes-lab probe</c>), which is how the node's
/// and the pods' own processes meet --mode=ebpf's socket hooks: they act on sockets of processes in --bpf-cgroup,
/// and a cgroup v2 holds whole processes, not threads.
/// </summary>
public static class LocalProbeCommand
{
    /// <summary>Sends <paramref name="count"/> requests from <paramref name="source"/>: each one's outcome and, when answered, its body on one line.</summary>
    public static async Task<List<(ProbeOutcome Outcome, string Body)>> RequestsAsync(NetworkNamespace source, string ip, int port, bool udp, int count, TimeSpan timeout, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(source);
        var replies = new List<(ProbeOutcome, string)>();
        for (var i = 0; i < count; i++)
        {
            if (udp)
            {
                var reply = await source.UdpRequestAsync(ip, port, "who", timeout, cancellationToken);
                replies.Add((reply.Outcome, reply.IsAnswered ? OneLine(reply.Text) : ""));
            }
            else
            {
                var reply = await source.HttpGetAsync(ip, port, "/cgi-bin/who", timeout, cancellationToken);
                replies.Add((reply.Outcome, reply.IsAnswered ? OneLine(reply.Body) : ""));
            }
        }
        return replies;
    }

    /// <summary><see cref="RequestsAsync"/> from a child process in <paramref name="source"/> and in <paramref name="cgroup"/>.</summary>
    public static async Task<List<(ProbeOutcome Outcome, string Body)>> RequestsInCgroupAsync(
        NetworkNamespace source, SandboxCgroup cgroup, string ip, int port, bool udp, int count, TimeSpan timeout, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(source);
        var (file, prefix) = ProxyProcess.Executable(ProxyProcess.Lab);
        string[] args =
        [
            .. prefix, "probe", $"--netns={source.Name}", $"--to={ip}", $"--port={port.ToString(CultureInfo.InvariantCulture)}",
            $"--count={count.ToString(CultureInfo.InvariantCulture)}", $"--timeout-ms={timeout.TotalMilliseconds.ToString("0", CultureInfo.InvariantCulture)}", .. udp ? ["--udp"] : Array.Empty<string>(),
        ];
        await using var probe = source.StartProcess(file, args, cgroup: cgroup);
        using var budget = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        budget.CancelAfter(TimeBudget.For(TimeSpan.FromSeconds(30)) + timeout * count);
        try
        {
            await probe.WaitForExitAsync(budget.Token);
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
        {
            throw new TimeoutException($"the probe process in the cgroup {cgroup.Path} did not finish:\n{string.Join('\n', probe.StandardErrorLines)}");
        }
        if (probe.ExitCode != 0)
            throw new InvalidOperationException($"the probe process in the cgroup {cgroup.Path} exited with {probe.ExitCode}:\n{string.Join('\n', probe.StandardErrorLines.TakeLast(20))}");
        return [.. probe.StandardOutputLines.Where(line => line.Length > 0).Select(line =>
        {
            var parts = line.Split(' ', 2);
            return (Enum.Parse<ProbeOutcome>(parts[0]), parts.Length > 1 ? parts[1] : "");
        })];
    }

    /// <summary>The hidden command <see cref="RequestsInCgroupAsync"/> starts: one line per request, "OUTCOME [BODY]".</summary>
    public static Command Create()
    {
        var command = new Command("probe") { Hidden = true };
        var netns = new Option<string>("--netns") { Required = true };
        var to = new Option<string>("--to") { Required = true };
        var port = new Option<int>("--port") { Required = true };
        var count = new Option<int>("--count") { DefaultValueFactory = _ => 1 };
        var timeoutMs = new Option<int>("--timeout-ms") { DefaultValueFactory = _ => 5000 };
        var udp = new Option<bool>("--udp");
        foreach (var option in new Option[] { netns, to, port, count, timeoutMs, udp }) command.Options.Add(option);
        command.SetAction(async (result, token) =>
        {
            using var source = NetworkNamespace.Attach(result.GetValue(netns)!);
            var replies = await RequestsAsync(source, result.GetValue(to)!, result.GetValue(port), result.GetValue(udp), Math.Clamp(result.GetValue(count), 1, 1000),
                TimeSpan.FromMilliseconds(Math.Clamp(result.GetValue(timeoutMs), 1, 60_000)), token);
            foreach (var (outcome, body) in replies) Console.WriteLine(body.Length > 0 ? $"{outcome} {body}" : outcome.ToString());
            return 0;
        });
        return command;
    }

    private static string OneLine(string text) => text.ReplaceLineEndings(" ").Trim();
}
