using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using static ProxyPlanes.Netlink.LinuxUapi;

namespace ProxyPlanes.Netlink;

/// <summary>
/// The P/Invoke surface of the netlink library, kept in one place the way dotnet/runtime does it:
/// source-generated <see cref="LibraryImportAttribute"/> stubs, a SafeHandle for the socket and a
/// single helper that turns errno into an exception naming the failed operation.
/// </summary>
internal static unsafe partial class Interop
{
    /// <summary>struct sockaddr_nl.</summary>
    [StructLayout(LayoutKind.Sequential)]
    internal struct SockaddrNl
    {
        public ushort Family;
        public ushort Pad;
        public uint Pid;
        public uint Groups;
    }

    /// <summary>struct timeval, for SO_RCVTIMEO (64-bit Linux).</summary>
    [StructLayout(LayoutKind.Sequential)]
    internal struct Timeval
    {
        public long Seconds;
        public long Microseconds;
    }

    [LibraryImport("libc", EntryPoint = "socket", SetLastError = true)]
    private static partial SafeNetlinkHandle SocketCore(int domain, int type, int protocol);

    [LibraryImport("libc", EntryPoint = "bind", SetLastError = true)]
    private static partial int BindCore(SafeNetlinkHandle fd, SockaddrNl* address, int addressLength);

    [LibraryImport("libc", EntryPoint = "getsockname", SetLastError = true)]
    private static partial int GetSockNameCore(SafeNetlinkHandle fd, SockaddrNl* address, int* addressLength);

    [LibraryImport("libc", EntryPoint = "setsockopt", SetLastError = true)]
    private static partial int SetSockOptCore(SafeNetlinkHandle fd, int level, int name, void* value, int length);

    [LibraryImport("libc", EntryPoint = "sendto", SetLastError = true)]
    private static partial nint SendToCore(SafeNetlinkHandle fd, byte* buffer, nint length, int flags, SockaddrNl* address, int addressLength);

    /// <summary>struct iovec.</summary>
    [StructLayout(LayoutKind.Sequential)]
    internal struct Iovec
    {
        public void* Base;
        public nuint Length;
    }

    /// <summary>struct msghdr (64-bit Linux; sequential layout pads after msg_namelen as C does).</summary>
    [StructLayout(LayoutKind.Sequential)]
    internal struct Msghdr
    {
        public void* Name;
        public uint NameLength;
        public Iovec* Iov;
        public nuint IovLength;
        public void* Control;
        public nuint ControlLength;
        public int Flags;
    }

    [LibraryImport("libc", EntryPoint = "sendmsg", SetLastError = true)]
    private static partial nint SendMsgCore(SafeNetlinkHandle fd, Msghdr* message, int flags);

    [LibraryImport("libc", EntryPoint = "recvfrom", SetLastError = true)]
    private static partial nint RecvFromCore(SafeNetlinkHandle fd, byte* buffer, nint length, int flags, SockaddrNl* address, int* addressLength);

    [LibraryImport("libc", EntryPoint = "close", SetLastError = true)]
    internal static partial int Close(nint fd);

    /// <summary>Opens a netlink socket of <paramref name="protocol"/> (NETLINK_ROUTE, NETLINK_GENERIC), close-on-exec.</summary>
    internal static SafeNetlinkHandle OpenNetlinkSocket(int protocol)
    {
        var handle = SocketCore(Socket.AF_NETLINK, Socket.SOCK_RAW | Socket.SOCK_CLOEXEC, protocol);
        if (handle.IsInvalid)
        {
            Exception error = GetExceptionForLastError($"socket(AF_NETLINK, {NetlinkErrors.ProtocolName(protocol)})");
            handle.Dispose();
            throw error;
        }

        return handle;
    }

    /// <summary>Binds to a kernel-assigned port id and returns it.</summary>
    internal static uint Bind(SafeNetlinkHandle fd)
    {
        var address = new SockaddrNl { Family = Socket.AF_NETLINK };
        if (BindCore(fd, &address, sizeof(SockaddrNl)) != 0)
        {
            throw GetExceptionForLastError("bind(AF_NETLINK)");
        }

        var length = sizeof(SockaddrNl);
        if (GetSockNameCore(fd, &address, &length) != 0)
        {
            throw GetExceptionForLastError("getsockname(AF_NETLINK)");
        }

        return address.Pid;
    }

    /// <summary>setsockopt with an int value; returns the errno (0 on success) so optional options can be tried.</summary>
    internal static int TrySetSocketOption(SafeNetlinkHandle fd, int level, int name, int value)
    {
        return SetSockOptCore(fd, level, name, &value, sizeof(int)) == 0 ? 0 : Marshal.GetLastPInvokeError();
    }

    internal static void SetSocketOption(SafeNetlinkHandle fd, int level, int name, int value, string description)
    {
        var errno = TrySetSocketOption(fd, level, name, value);
        if (errno != 0)
        {
            throw GetExceptionForErrno(errno, $"setsockopt({description}, {value})");
        }
    }

    internal static void SetReceiveTimeout(SafeNetlinkHandle fd, TimeSpan timeout)
    {
        var value = new Timeval { Seconds = (long)timeout.TotalSeconds, Microseconds = timeout.Microseconds + (timeout.Milliseconds * 1000L) };
        if (SetSockOptCore(fd, Socket.SOL_SOCKET, Socket.SO_RCVTIMEO, &value, sizeof(Timeval)) != 0)
        {
            throw GetExceptionForLastError("setsockopt(SO_RCVTIMEO)");
        }
    }

    /// <summary>
    /// Sends one datagram made of <paramref name="chunks"/> (pinned arrays, each with the length used)
    /// to the kernel (port id 0) with sendmsg, retrying on EINTR: the kernel copies them into one
    /// message, so a large batch never needs one contiguous array here.
    /// </summary>
    internal static void SendToKernel(SafeNetlinkHandle fd, IReadOnlyList<(byte[] Array, int Length)> chunks, string operation)
    {
        if (chunks.Count == 1)
        {
            SendToKernel(fd, chunks[0].Array.AsSpan(0, chunks[0].Length), operation);
            return;
        }
        var kernel = new SockaddrNl { Family = Socket.AF_NETLINK };
        var vectors = new Iovec[chunks.Count];
        long total = 0;
        for (var i = 0; i < chunks.Count; i++)
        {
            // The arrays are on the pinned object heap (GC.AllocateUninitializedArray(pinned: true)): their addresses do not move.
            vectors[i] = new Iovec { Base = Unsafe.AsPointer(ref MemoryMarshal.GetArrayDataReference(chunks[i].Array)), Length = (nuint)chunks[i].Length };
            total += chunks[i].Length;
        }
        fixed (Iovec* iov = vectors)
        {
            var message = new Msghdr { Name = &kernel, NameLength = (uint)sizeof(SockaddrNl), Iov = iov, IovLength = (nuint)vectors.Length };
            while (true)
            {
                var sent = SendMsgCore(fd, &message, 0);
                if (sent >= 0)
                {
                    if (sent != total)
                    {
                        throw new NetlinkException(Errno.EMSGSIZE, operation, $"sendmsg sent {sent} of {total} bytes");
                    }

                    return;
                }

                var errno = Marshal.GetLastPInvokeError();
                if (errno != Errno.EINTR)
                {
                    throw new NetlinkException(errno, $"{operation}: sendmsg");
                }
            }
        }
    }

    /// <summary>Sends one datagram to the kernel (port id 0), retrying on EINTR.</summary>
    internal static void SendToKernel(SafeNetlinkHandle fd, ReadOnlySpan<byte> datagram, string operation)
    {
        var kernel = new SockaddrNl { Family = Socket.AF_NETLINK };
        fixed (byte* buffer = datagram)
        {
            while (true)
            {
                var sent = SendToCore(fd, buffer, datagram.Length, 0, &kernel, sizeof(SockaddrNl));
                if (sent >= 0)
                {
                    if (sent != datagram.Length)
                    {
                        throw new NetlinkException(Errno.EMSGSIZE, operation, $"sendto sent {sent} of {datagram.Length} bytes");
                    }

                    return;
                }

                var errno = Marshal.GetLastPInvokeError();
                if (errno != Errno.EINTR)
                {
                    throw new NetlinkException(errno, $"{operation}: sendto");
                }
            }
        }
    }

    /// <summary>
    /// Receives one datagram into <paramref name="buffer"/>, retrying on EINTR. Returns the datagram's
    /// real length (MSG_TRUNC), which is larger than the buffer when it did not fit, or the negated errno.
    /// </summary>
    internal static int Receive(SafeNetlinkHandle fd, Span<byte> buffer, int flags)
    {
        fixed (byte* data = buffer)
        {
            while (true)
            {
                var from = default(SockaddrNl);
                var fromLength = sizeof(SockaddrNl);
                var received = RecvFromCore(fd, data, buffer.Length, flags | Socket.MSG_TRUNC, &from, &fromLength);
                if (received >= 0)
                {
                    return (int)received;
                }

                var errno = Marshal.GetLastPInvokeError();
                if (errno != Errno.EINTR)
                {
                    return -errno;
                }
            }
        }
    }

    /// <summary>Builds the exception for the errno left by the last P/Invoke marked <c>SetLastError = true</c>.</summary>
    internal static NetlinkException GetExceptionForLastError(string operation) =>
        GetExceptionForErrno(Marshal.GetLastPInvokeError(), operation);

    internal static NetlinkException GetExceptionForErrno(int errno, string operation) => new(errno, operation);
}

/// <summary>A netlink socket's file descriptor, closed when released.</summary>
internal sealed class SafeNetlinkHandle : SafeHandle
{
    public SafeNetlinkHandle()
        : base(invalidHandleValue: -1, ownsHandle: true)
    {
    }

    public override bool IsInvalid => handle == -1;

    protected override bool ReleaseHandle() => Interop.Close(handle) == 0;
}
