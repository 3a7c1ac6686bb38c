using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;

namespace ProxyPlanes.Sandbox;

/// <summary>
/// P/Invoke surface of the sandbox, kept in one place the way dotnet/runtime does it:
/// source-generated <see cref="LibraryImportAttribute"/> stubs, SafeHandles for file descriptors and
/// a single helper that turns errno into an exception naming the failed operation.
/// </summary>
internal static partial class Interop
{
    /// <summary>Namespace type for <c>setns(2)</c>: network namespace.</summary>
    internal const int CLONE_NEWNET = 0x40000000;

    private const int O_RDONLY = 0x0;
    private const int O_CLOEXEC = 0x80000;

    /// <summary>SIGKILL, for killing processes by PID that this process did not spawn itself (sweeps).</summary>
    internal const int SIGKILL = 9;

    private const int ESRCH = 3;

    [LibraryImport("libc", EntryPoint = "open", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial SafeFileHandle OpenCore(string path, int flags);

    [LibraryImport("libc", EntryPoint = "setns", SetLastError = true)]
    private static partial int SetNsCore(SafeFileHandle fd, int nstype);

    [LibraryImport("libc", EntryPoint = "kill", SetLastError = true)]
    private static partial int KillCore(int pid, int signal);

    /// <summary>Opens <paramref name="path"/> read-only with O_CLOEXEC (namespace files are not regular files, so no FileStream).</summary>
    internal static SafeFileHandle OpenReadOnly(string path)
    {
        var handle = OpenCore(path, O_RDONLY | O_CLOEXEC);
        if (handle.IsInvalid)
        {
            var error = GetExceptionForLastError($"open(\"{path}\")");
            handle.Dispose();
            throw error;
        }

        return handle;
    }

    /// <summary>Moves the calling thread into the namespace referred to by <paramref name="fd"/>.</summary>
    internal static void SetNamespace(SafeFileHandle fd, int nstype, string description)
    {
        if (SetNsCore(fd, nstype) != 0)
        {
            throw GetExceptionForLastError($"setns({description})");
        }
    }

    /// <summary>Sends <paramref name="signal"/> to <paramref name="pid"/>; returns false if the process no longer exists.</summary>
    internal static bool Kill(int pid, int signal)
    {
        if (KillCore(pid, signal) == 0)
        {
            return true;
        }

        var errno = Marshal.GetLastPInvokeError();
        if (errno == ESRCH)
        {
            return false;
        }

        throw GetExceptionForErrno(errno, $"kill({pid}, {signal})");
    }

    /// <summary>Builds the exception for the errno left by the last P/Invoke marked <c>SetLastError = true</c>.</summary>
    internal static Exception GetExceptionForLastError(string operation) =>
        GetExceptionForErrno(Marshal.GetLastPInvokeError(), operation);

    internal static Exception GetExceptionForErrno(int errno, string operation) =>
        new SandboxException($"{operation} failed: {Marshal.GetPInvokeErrorMessage(errno)} (errno {errno}).")
        {
            HResult = errno,
        };
}
