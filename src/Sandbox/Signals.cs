namespace ProxyPlanes.Sandbox;

/// <summary>Sends POSIX signals to processes a caller started (by PID).</summary>
public static class Signals
{
    public const int Interrupt = 2;   // SIGINT, as Ctrl+C
    public const int Terminate = 15;  // SIGTERM, as the kubelet stops a pod

    /// <summary>False when the process no longer exists.</summary>
    public static bool Send(int pid, int signal) => Interop.Kill(pid, signal);
}
