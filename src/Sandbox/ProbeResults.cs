using System.Text;

namespace ProxyPlanes.Sandbox;

/// <summary>How a probe ended.</summary>
public enum ProbeOutcome
{
    /// <summary>The server answered (any HTTP status; for UDP, a datagram came back).</summary>
    Answered,

    /// <summary>TCP RST or ICMP port unreachable (<see cref="System.Net.Sockets.SocketError.ConnectionRefused"/>).</summary>
    Refused,

    /// <summary>Nothing came back within the timeout.</summary>
    TimedOut,

    /// <summary>ICMP host/net unreachable, or no route at all.</summary>
    Unreachable,

    /// <summary>Anything else (reset mid-response, malformed response, ...); see the result's Error.</summary>
    Error,
}

/// <summary>Result of <see cref="NetworkNamespace.HttpGetAsync"/>.</summary>
/// <param name="Outcome">How the probe ended.</param>
/// <param name="Body">HTTP body only (headers stripped); empty unless <see cref="ProbeOutcome.Answered"/>.</param>
/// <param name="Elapsed">Time from socket creation to the end of the probe.</param>
/// <param name="StatusCode">HTTP status code when answered.</param>
/// <param name="Error">Human-readable reason when not answered.</param>
public sealed record HttpProbeResult(
    ProbeOutcome Outcome,
    string Body,
    TimeSpan Elapsed,
    int? StatusCode = null,
    string? Error = null)
{
    public bool IsAnswered => Outcome == ProbeOutcome.Answered;

    public override string ToString() =>
        Outcome == ProbeOutcome.Answered
            ? $"Answered {StatusCode} in {Elapsed.TotalMilliseconds:0.#} ms: {Body.Trim()}"
            : $"{Outcome} after {Elapsed.TotalMilliseconds:0.#} ms{(Error is null ? string.Empty : ": " + Error)}";
}

/// <summary>Result of <see cref="NetworkNamespace.UdpRequestAsync(string, int, ReadOnlyMemory{byte}, TimeSpan, CancellationToken)"/>.</summary>
/// <param name="Outcome">How the probe ended.</param>
/// <param name="Payload">The reply datagram; empty unless <see cref="ProbeOutcome.Answered"/>.</param>
/// <param name="Elapsed">Time from socket creation to the end of the probe.</param>
/// <param name="Error">Human-readable reason when not answered.</param>
public sealed record UdpProbeResult(
    ProbeOutcome Outcome,
    byte[] Payload,
    TimeSpan Elapsed,
    string? Error = null)
{
    public bool IsAnswered => Outcome == ProbeOutcome.Answered;

    /// <summary>The reply decoded as UTF-8.</summary>
    public string Text => Encoding.UTF8.GetString(Payload);

    public override string ToString() =>
        Outcome == ProbeOutcome.Answered
            ? $"Answered in {Elapsed.TotalMilliseconds:0.#} ms: {Text.Trim()}"
            : $"{Outcome} after {Elapsed.TotalMilliseconds:0.#} ms{(Error is null ? string.Empty : ": " + Error)}";
}
