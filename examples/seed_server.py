import DQUIC

# Initialize DQUIC
server_dquic = DQUIC.DQUIC()

# Bind to server address
server_address = ('localhost', 9999)
server_dquic.bind(server_address)

# Receive data
max_bytes = 1024
sender_address, received_data = server_dquic.receive_from(max_bytes)
print(f"Received data from {sender_address}: {received_data}")

# Define data to send back
data_to_send_back = {
    1: b'response data stream 1',
    2: b'response data stream 2'
}

# Send response
bytes_sent = server_dquic.send_to(sender_address, data_to_send_back)
print(f"Bytes sent: {bytes_sent}")

# Close the connection
server_dquic.close()
